"""The run folder, below everything that reads or writes it: its layout and writer lock (``folder``), its
metrics file (``metrics_file``), its checkpoints (``checkpoint``) and the trained agent loaded from it or
from an exported agent folder (``trained_agent``)."""
