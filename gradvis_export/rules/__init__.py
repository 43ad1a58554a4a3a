"""Rules: how a backward operator is rewritten, apart from which explainer uses them.

* `explanation`: rules that change what a backward op computes (guided backprop), applied by
  `RuleMode` around one gradient call;
* `decompositions`: rules that compute exactly what a backward op computes with forward
  operators only (the trace's decomposition table, so artifacts hold no backward op);
* `activations`: the one table of what gradvis knows about activations.
"""

from gradvis_export.rules.activations import activation_names, aten_activations
from gradvis_export.rules.decompositions import export_rules
from gradvis_export.rules.explanation import Rule, RuleMode, RuleSet, guided_rules

__all__ = [
    "Rule",
    "RuleMode",
    "RuleSet",
    "activation_names",
    "aten_activations",
    "export_rules",
    "guided_rules",
]
