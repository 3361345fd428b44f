"""Features: run the frozen upstream once per audio file, train heads from disk.

s3prl re-runs the frozen upstream on every training step. Since the upstream is
frozen, its outputs are a pure function of (weights, audio), so we compute them
once and key each utterance's features by its AUDIO, not by the task or the labels:

    cache_dir()/<upstream>-<upstream fp>/<level>-v<FORMAT>/
        cache.json                  format version, level, upstream, layers, hidden size
        extract.lock                held by the one process that is extracting
        plans/<request hash>.json   chunks of batches of audio keys for one set of missing audio
        <plan12>-00000.npy          the features of one chunk
        <plan12>-00000.json         audio keys, frame counts, offsets, the .npy's size and blake2b;
                                    written LAST = the chunk is complete

An audio key (`audio_key`) is a blake2b digest of the file's size and every byte of it,
read in 1 MiB blocks (about 5 % of FBANK extraction's time on the demo corpus, far less
of a neural upstream's; `make bench` measures it). The features are a function of the
bytes alone, so the key names no path: PR and ASR over the same LibriSpeech files share
one frame cache, fixing a transcript re-extracts nothing, a subset of earlier audio
extracts nothing, a superset extracts only what is missing, a moved corpus extracts
nothing, and any change to a file's bytes (an in-place edit included) gives a new key
and the file is extracted again. `audio_fingerprint` digests a manifest's (utterance,
audio key) pairs: what the runner records to tell a corpus whose audio changed.

Two levels:

* ``utterance`` (a task whose ``level`` is "utterance", such as KS or SID): per utterance, the
  mean over valid frames of every layer, an (L, D) float32 array. This is exact, not an approximation:
  the utterance head is linear up to its mean pool (weighted sum, then Linear),
  and linear maps commute with the mean (tested in tests/test_cache.py).
* ``frame`` (a task whose ``level`` is "frame", such as PR or ASR): every layer's frames in
  float16, one ``(T_total, L, D)`` .npy per chunk.

Both are read with ``np.load(mmap_mode="r")``, one map per chunk, so training touches
only the pages of the utterances in the current batch; memory stays flat however
large the corpus.

Extraction plans the missing audio (longest first, so an out-of-memory surfaces
in the first batch; batches under a samples budget), stores the plan under the hash
of the requested keys, runs under inference mode and is resumable: a chunk is
written to a temp file and renamed, its .json is written after its .npy, and a
re-run finds the same plan, does only the chunks without a .json and never reads a
temp file, so its features are byte-identical to an uninterrupted run's.

Every chunk is verified before it is used: its .npy must have the size and blake2b that its
.json recorded when it was written (a streaming read, once per file and process: the verified
(path, size, mtime, inode) are remembered). A chunk whose .npy is damaged or truncated, or whose
.json is unreadable, is logged with its path and treated as missing: under the extraction lock the
pair is removed and the chunk is extracted again; damaged features are never read.

The folder name is built from the upstream's name and fingerprint, both made safe first: anything
that is not a plain token is hashed, and the final path must lie inside the cache root.

Writers hold ``extract.lock`` (a `filelock.FileLock`) for the whole extraction, and
remove stale temp files only while holding it, so a second process waits instead of
deleting a running writer's temp files, then finds the work done. Reading a complete
cache takes no lock: a chunk is visible only once its .json exists.
"""
