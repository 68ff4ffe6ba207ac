"""Regenerates allen_regions.csv from the PyPI package `iblatlas` (MIT licence).

    pip install iblatlas==1.3.0 && python3 make_allen_regions.py > allen_regions.csv

One row per Allen CCF 2017 structure id (non-lateralised): its acronym and the acronyms of
the IBL Beryl and Cosmos regions it belongs to.
"""
import sys

import numpy as np
import pandas as pd
from iblatlas.regions import BrainRegions

br = BrainRegions()
ids = np.unique(br.id[br.id >= 0])
pd.DataFrame(
    {
        "id": ids,
        "acronym": br.id2acronym(ids, mapping="Allen"),
        "beryl": br.id2acronym(ids, mapping="Beryl"),
        "cosmos": br.id2acronym(ids, mapping="Cosmos"),
    }
).to_csv(sys.stdout, index=False)
