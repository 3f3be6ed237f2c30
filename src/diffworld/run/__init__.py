"""The run folder, below everything that reads or writes it: its layout and writer lock (``folder``), its
metrics file (``metrics_file``), its checkpoints (``checkpoint``), model weights as safetensors
(``weights``), and the official DIAMOND checkpoint files with the checks of both official importers
(``official_file``). Each product's own reading of its folders is in its package (the trained agent:
``agent/trained.py``; the trained engine: ``engine/trained.py``)."""
