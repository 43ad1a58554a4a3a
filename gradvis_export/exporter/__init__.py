"""`gv.export` (`api`): validate -> trace (`trace`) -> graph passes (`passes`) and checks
(`checks`) -> precision (`precision`) and profile passes (`profiles`, `ort_cpu`, `tensorrt`)
-> write (one module per format in `formats`) -> guard (`guard`).  The artifact's contract is
built in `spec`."""
