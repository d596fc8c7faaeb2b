"""Look inside a network: layer summaries, captured activations, attributions."""

from cnnlab.inspect.summary import LayerRow, ShapeMismatchError, Summary, summary

__all__ = ["LayerRow", "ShapeMismatchError", "Summary", "summary"]
