"""
Fitting data larger than memory
===============================

The estimators read a NumPy memory map, a Dask array or a stream of chunks
without loading the data: every pass over the rows goes chunk by chunk, and
the result equals the in-memory fit to round-off.  Here a file of 200,000
rows stands in for one larger than memory.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

import moelearn

truth = moelearn.make_moe(n_features=5, n_experts=3, noise_std=0.2, random_state=0)
X, y = moelearn.sample(truth, 200_000, random_state=1)

folder = Path(tempfile.mkdtemp())
np.save(folder / "X.npy", X)
np.save(folder / "y.npy", y)
X_map = np.load(folder / "X.npy", mmap_mode="r")  # nothing is read yet
y_map = np.load(folder / "y.npy", mmap_mode="r")

# %%
# A memory map is fitted like an array; ``chunk_size`` sets the rows read
# at a time.

start = time.perf_counter()
on_disk = moelearn.MixtureOfExpertsRegressor(3, chunk_size=20_000, random_state=0)
on_disk.fit(X_map, y_map)
print(f"memory map: {time.perf_counter() - start:.1f} s")

in_memory = moelearn.MixtureOfExpertsRegressor(3, random_state=0).fit(X, y)
print("largest difference of the experts:",
      np.abs(on_disk.experts_ - in_memory.experts_).max())
print("error against the truth:", moelearn.parameter_errors(on_disk, truth).experts)

# %%
# A stream of chunks
# ------------------
# :class:`~moelearn.ChunkedDataset` wraps a function that yields ``(X, y)``
# pieces; it is called once per pass, so the pieces can come from files, a
# database or a generator that never holds all the rows.


def read_chunks():
    for first in range(0, len(y_map), 50_000):
        yield X_map[first : first + 50_000], y_map[first : first + 50_000]


streamed = moelearn.MixtureOfExpertsRegressor(3, random_state=0)
streamed.fit(moelearn.ChunkedDataset(read_chunks))
print("stream vs memory map:", np.abs(streamed.experts_ - on_disk.experts_).max())

# %%
# With Dask (``pip install "moelearn[dask]"``) the same fit reads a
# ``dask.array`` chunk by chunk on the active scheduler, a
# ``distributed.Client`` included::
#
#     import dask.array as da
#     moelearn.MixtureOfExpertsRegressor(3).fit(da.from_array(X_map, chunks=20_000),
#                                               da.from_array(y_map, chunks=20_000))

# %%
# The files were only stand-ins: remove them.

import shutil  # noqa: E402

del X_map, y_map
shutil.rmtree(folder)
