"""Assembling TRRG models: presets and their recipes (``presets``), the report tokenizer
(``report_tokenizer``), building either stage's model from a preset (``build``), the stage-1 ->
stage-2 bridge (``bridge``), and loading, saving and exporting model folders (``hub_folders``)."""
