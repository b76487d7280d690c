"""Persistence: every file irevnet writes or reads a model from, in one package.

Layers, each module one job; only :mod:`.load` imports the model (which imports the others):

- :mod:`.names`: the file names (model folder, run folder) and the format tag, defined once;
- :mod:`.safe`: the one safe reader of ``.pt`` and ``.safetensors`` files (no pickled code runs);
- :mod:`.fit`: the one check that a state dict fits a model (missing / unexpected / mis-shaped);
- :mod:`.formats`: checkpoints and model folders as configuration + tensors;
- :mod:`.source`: the one resolver of a source (checkpoint, model folder, run folder, Hub id);
- :mod:`.weights`: any source read as configuration + tensors;
- :mod:`.hub`: Hugging Face Hub downloads;
- :mod:`.load`: ``load_model``, ``save_model``, ``save_pretrained``, ``init_weights_from``.

Import from the modules (``from irevnet.io.load import load_model``); the package imports
nothing itself, so the model can import the lower layers without running :mod:`.load`.
The common functions are also ``irevnet.load_model``, ``irevnet.save_model``, ...
"""
