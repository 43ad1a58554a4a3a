"""The core every explainer stands on: the explainer base (`explainer`), what the explanation is
about (`targets`), finding and capturing layers and the default-layer rule (`layers`), token
grids and traceable attention (`tokens`), map helpers (`maps`: resize, normalise, the in-graph
colormap), in-graph uint8 preprocessing (`preprocess`) and the tracing flag (`mode`).  It
imports no other layer of gradvis_export."""
