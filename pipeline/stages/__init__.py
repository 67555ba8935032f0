"""Stage modules: one per command of `python -m pipeline`, each a dvc.yaml stage except `bench` and `predict`.

A stage reads its params and inputs, calls the library (the modules of `pipeline/` beside this folder) and
writes its outputs. A stage never imports another stage: what two stages share lives in the library.
"""
