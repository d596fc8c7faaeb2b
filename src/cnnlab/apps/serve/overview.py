"""The network at a glance behind /api/layers and /api/neuron: one forward pass per image, cached, drawn as maps.

The model side (which layers, their groups, one hooked pass, the worked values) is `inspect.overview` and
`inspect.neuron`; here the pass is cached per uploaded image (a hash of its bytes and the invert flag, in a
least-recently-used cache bounded by entries and bytes), so a click's /api/neuron after /api/layers reuses it,
and each layer's maps become one palette PNG (a sprite) on one colour scale per layer.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from cnnlab.apps.serve.encode import ColourScale, sprite_png
from cnnlab.apps.serve.errors import InvalidInput, NotAvailable, NotFound
from cnnlab.data.domain import InputCheck
from cnnlab.inspect.elementwise import CannotWorkOut
from cnnlab.inspect.overview import LayerCall, Overview

MAX_CHANNELS = 64  # maps per layer in a whole overview; one layer's maps may be asked for all at once
MAX_LAYER_CHANNELS = 4096
MAX_CLASSES_LISTED = 20  # more classes than this: the top ones are listed


@dataclass
class Seen:
    """One image's pass: what the model saw and everything it recorded."""

    x: torch.Tensor  # the normalized input (1, C, H, W)
    check: InputCheck
    overview: Overview

    @property
    def nbytes(self) -> int:
        return self.overview.nbytes + self.x.numel() * self.x.element_size()


class OverviewCache:
    """Least recently used passes, at most `entries` of them and `max_bytes` of recorded tensors in all."""

    def __init__(self, entries: int = 16, max_bytes: int = 512 * 2**20):
        self.entries, self.max_bytes = entries, max_bytes
        self._items: OrderedDict[str, Seen] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(data: bytes, invert: bool) -> str:
        return hashlib.sha256(data).hexdigest() + (":inverted" if invert else ":as-sent")

    def get(self, key: str, compute: Callable[[], Seen]) -> Seen:
        """The cached pass for `key`, or `compute()`'s, kept (the oldest dropped past the bounds)."""
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
            self.misses += 1
        seen = compute()  # outside the lock: other images' requests need not wait for this pass
        with self._lock:
            self._items[key] = seen
            self._items.move_to_end(key)
            total = sum(s.nbytes for s in self._items.values())
            while len(self._items) > 1 and (len(self._items) > self.entries or total > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                total -= dropped.nbytes
        return seen

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------- /api/layers


def _maps(t: torch.Tensor, count: int) -> dict[str, Any]:
    """The first `count` maps of t (C, H, W) as one sprite on the scale of all of t's values, with their ranges."""
    lo, hi = float(t.min()), float(t.max())
    scale = ColourScale.of(lo, hi)
    shown = t[:count]
    image, columns = sprite_png(shown, scale)
    flat = shown.flatten(1)
    return {"range": [lo, hi], "scale": scale.to_dict(),
            "sprite": {"image": image, "columns": columns, "count": shown.shape[0], "height": t.shape[1],
                       "width": t.shape[2], "layout": "maps row by row, `columns` to a row, no gaps"},
            "maps": [{"channel": c, "min": lo_c, "max": hi_c}
                     for c, (lo_c, hi_c) in enumerate(zip(flat.min(1).values.tolist(), flat.max(1).values.tolist()))]}


def layer_entry(call: LayerCall, group: str, channels: int) -> dict[str, Any]:
    """One column: name, type, kind, block, shape, the range of all its values, its scale and its first maps."""
    out = call.output[0]
    return {"name": call.key, "type": call.type, "kind": call.kind, "group": group, "shape": list(out.shape),
            **_maps(out, channels), "input_from": call.source or "input"}


def input_entry(x: torch.Tensor, shown_png: str, channel_names: list[str]) -> dict[str, Any]:
    """The input as the model sees it: the picture, and each channel of the normalized tensor as a map."""
    entry = {"name": "input", "shape": list(x.shape[1:]), "image": shown_png, **_maps(x[0], x.shape[1]),
             "about": "the normalized tensor the first layer gets: (pixel - mean) / std per channel"}
    for m in entry["maps"]:
        m["name"] = channel_names[m["channel"]]
    return entry


def head_entry(seen: Overview, classes: tuple[str, ...]) -> dict[str, Any]:
    """The end of the network: the layers after the last map, and every (or the top) class's score and probability."""
    last = max((list(seen.layers).index(k) for k in seen.shown), default=-1)
    after = [c for c in list(seen.layers.values())[last + 1:] if not c.is_map]
    order = list(range(len(classes))) if len(classes) <= MAX_CLASSES_LISTED else \
        seen.probs.argsort(descending=True, stable=True)[:10].tolist()
    scores = seen.logits if seen.logits.numel() == len(classes) else None
    return {
        "layer": seen.head, "outputs": seen.logits.numel(), "after_maps": [{"name": c.key, "type": c.type, "kind": c.kind,
                                            "shape": list(c.output.shape[1:])} for c in after],
        "classes": [{"index": k, "class": classes[k], "logit": None if scores is None else float(scores[k]),
                     "probability": float(seen.probs[k])} for k in order],
        "listed": "all" if len(order) == len(classes) else f"the top {len(order)} of {len(classes)}",
        "outputs_are_probs": seen.outputs_are_probs,
    }


def layers_reply(seen: Seen, classes: tuple[str, ...], shown_png: str, channel_names: list[str],
                 channels: int, layer: str | None) -> dict[str, Any]:
    """What /api/layers returns: every shown layer's column (or one layer's, with up to every map)."""
    ov = seen.overview
    if layer is not None:
        if layer not in ov.shown:
            raise InvalidInput(f"no layer {layer!r} with maps; layers with maps: {_listing(ov.shown)}")
        return {"layers": [layer_entry(ov.layers[layer], ov.groups[layer], min(channels, MAX_LAYER_CHANNELS))]}
    notes = list(ov.notes)
    if channels > MAX_CHANNELS:  # as topk beyond the classes: what there is, and said
        notes.append(f"at most {MAX_CHANNELS} maps per layer for the whole network: ask for one layer's maps with "
                     f"layer=NAME to get more (up to {MAX_LAYER_CHANNELS})")
        channels = MAX_CHANNELS
    return {
        "input": input_entry(seen.x, shown_png, channel_names),
        "layers": [layer_entry(ov.layers[k], ov.groups[k], channels) for k in ov.shown],
        "head": head_entry(ov, classes),
        "notes": notes,
    }


def _listing(names: list[str]) -> str:
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


# ---------------------------------------------------------------- /api/neuron


def neuron_reply(seen: Seen, classes: tuple[str, ...], layer: str, channel: int, row: int, col: int
                 ) -> dict[str, Any]:
    """One value worked out (inspect.neuron), with class names where indices are classes."""
    from cnnlab.inspect.neuron import PositionOutside, work_value

    try:
        out = work_value(seen.overview, layer, channel, row, col)
    except CannotWorkOut as exc:
        raise NotAvailable(str(exc)) from None
    except PositionOutside as exc:  # the layer exists, this neuron of it does not
        raise NotFound(str(exc)) from None
    if out["kind"] == "dense" and out["layer"] == seen.overview.head:
        out["class"] = classes[channel] if channel < len(classes) else None
        for term in out.get("softmax", {}).get("terms", []):
            term["class"] = classes[term["index"]]
    return out
