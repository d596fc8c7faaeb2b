"""Applications over a trained run: `explain` (PNGs of one image), `report` (an HTML page), `serve` (the web app
and REST API), `export` (ONNX / TorchScript); and `widgets`, the lessons' sliders over conv math, inspect and viz.
They build on training, inspect and viz; nothing below imports them."""
