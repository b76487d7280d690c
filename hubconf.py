"""torch.hub entry points: ``torch.hub.load(REPO, "irevnet_301", source="local")`` (or a GitHub ``owner/repo``).

One entry point per preset, named as in timm (``irevnet_301`` is ``imagenet-b``, the others
``irevnet_<preset>``); keyword arguments are configuration overrides, as in
``irevnet.create_model``. ``pretrained=True`` needs ``weights=`` a model folder or Hugging
Face Hub id (``IRevNet.from_pretrained``): no weights are downloaded from anywhere else.
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors"]

# The package lives in src/; prefer this checkout's copy to any installed irevnet.
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from irevnet.factory import entrypoint_names as _entrypoint_names  # noqa: E402


def _entrypoint(name, preset):
    def entrypoint(pretrained=False, weights=None, **overrides):
        import irevnet

        if pretrained or weights is not None:
            if weights is None:
                raise ValueError(f"{name}: pretrained=True needs weights= a model folder or Hugging Face Hub id "
                                 "(irevnet publishes no download URL of its own)")
            if overrides:
                raise ValueError(f"{name}: the weights' config.json defines the model; drop the overrides "
                                 f"{sorted(overrides)}")
            model = irevnet.IRevNet.from_pretrained(weights)
            if model.config.name != preset:
                raise ValueError(f"{name}: {weights!r} holds a {model.config.name!r} model, not {preset!r}")
            return model
        return irevnet.create_model(preset, **overrides)

    entrypoint.__name__ = name
    entrypoint.__doc__ = f"i-RevNet preset {preset!r} (irevnet.create_model({preset!r}, **overrides))."
    return entrypoint


for _name, _preset in _entrypoint_names().items():
    globals()[_name] = _entrypoint(_name, _preset)
