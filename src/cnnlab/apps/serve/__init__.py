"""A local web app and prediction server: `create_app(run)` is a FastAPI app; `cnnlab serve` runs it under uvicorn.

Needs the `serve` extra (fastapi, uvicorn, python-multipart): pip install 'cnnlab[serve]'.
"""

from cnnlab.apps.serve.app import create_app

__all__ = ["create_app"]
