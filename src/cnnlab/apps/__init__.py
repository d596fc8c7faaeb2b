"""Applications over a trained run: `explain` (PNGs of one image), `report` (an HTML page), `serve` (the web app
and REST API), `export` (ONNX / TorchScript). They build on training, inspect and viz; nothing below imports them."""
