"""Corpus preparers: each writes superbench manifests (one folder per task) for a corpus on disk.

`demo` synthesises the offline demo corpus with eSpeak NG; the others index real corpora
(Speech Commands v0.01, VoxCeleb1, IEMOCAP, LibriSpeech, any Hugging Face audio dataset).
"""
