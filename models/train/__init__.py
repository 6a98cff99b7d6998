"""Training pipeline of the xray-npr synthetic/tampered radiograph detector.

Run from the repository root: ``python -m models.train --data DIR --work WORKDIR --config
models/train/config.yaml [--stage NAME]``. ``models`` itself stays a namespace package (no
``__init__.py``) so nothing installs a top-level ``models`` package.
"""
