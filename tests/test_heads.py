"""Heads: shapes per SUPERB config, CTC vocab/decoding, metrics vs hand-computed values, learning on tiny data."""

from __future__ import annotations

import pytest
import torch

from downstreams import CTCHead, CTCVocab, UtteranceHead
from downstreams.ctc import greedy_decode
from superbench import metrics


def test_utterance_head_matches_superb_shape():
    head = UtteranceHead(13, 768, 12)
    assert head.projector.in_features == 768 and head.projector.out_features == 256
    assert head.classifier.in_features == 256 and head.classifier.out_features == 12
    assert head(torch.randn(13, 4, 768)).shape == (4, 12)
    with pytest.raises(ValueError, match="needs lengths"):
        head(torch.randn(13, 4, 9, 768))


def test_asr_head_matches_superb_shape():
    head = CTCHead(13, 768, 30, proj_dim=1024, rnn_dims=[1024, 1024], dropout=0.2)
    assert head.projector.out_features == 1024
    assert [r.hidden_size for r in head.rnns] == [1024, 1024] and all(r.bidirectional for r in head.rnns)
    assert head.output.in_features == 2048 and head.output.out_features == 30
    out = head(torch.randn(13, 2, 7, 768), torch.tensor([7, 4]))
    assert out.shape == (2, 7, 30)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 7))


def test_pr_head_is_two_linear_layers():
    head = CTCHead(3, 16, 5, proj_dim=256)
    assert len(head.rnns) == 0 and head.output.in_features == 256


def test_char_vocab_round_trip_and_word_separator():
    vocab = CTCVocab.for_texts(["HELLO WORLD", "IT'S"])
    assert vocab.tokens[0] == "<blank>" and "|" in vocab.tokens
    ids = vocab.encode("HELLO  WORLD")
    assert [vocab.tokens[i] for i in ids] == list("HELLO|WORLD")
    assert vocab.decode(ids) == "HELLO WORLD"
    with pytest.raises(ValueError, match="'Z'"):
        vocab.encode("ZOO")


def test_greedy_decode_merges_repeats_and_drops_blanks():
    # frames: a a _ a b b _ (pad pad)
    path = [1, 1, 0, 1, 2, 2, 0, 2, 2]
    logits = torch.full((1, 9, 3), -10.0)
    logits[0, torch.arange(9), torch.tensor(path)] = 0.0
    assert greedy_decode(logits, torch.tensor([7])) == [[1, 1, 2]]


def test_metrics_against_hand_counts():
    refs, hyps = ["a b c d", "e f"], ["a x c", ""]
    # edits: sub b->x, del d (2) + del e, del f (2) = 4 over 6 reference tokens
    assert metrics.edit_distance("a b c d".split(), "a x c".split()) == 2
    assert metrics.wer(refs, hyps) == pytest.approx(100 * 4 / 6)
    assert metrics.per(refs, hyps) == pytest.approx(100 * 4 / 6)
    assert metrics.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="empty reference"):
        metrics.wer([""], ["a"])


def test_ctc_head_learns_a_tiny_sequence_task():
    """Two tokens, each a distinct feature vector held for 3 frames: CTC + greedy should get them right."""
    torch.manual_seed(0)
    protos = torch.randn(3, 8)  # 0 = silence, 1 = token a, 2 = token b
    seqs = [[1, 2], [2, 1], [1], [2, 2], [1, 1, 2]]

    def make(seq):
        frames = [protos[0]]
        for s in seq:
            frames += [protos[s]] * 3 + [protos[0]]
        return torch.stack(frames)

    feats = [make(s) for s in seqs]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), 8)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    x = x.unsqueeze(0).repeat(2, 1, 1, 1) + 0.01 * torch.randn(2, *x.shape)
    vocab = CTCVocab(["a", "b"], "phones")
    targets = [" ".join("ab"[s - 1] for s in seq) for seq in seqs]
    head = CTCHead(2, 8, len(vocab), proj_dim=16)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    from downstreams import CTCObjective

    obj = CTCObjective(vocab, "per")
    for _ in range(120):
        opt.zero_grad()
        loss = obj.loss(head(x, lengths), lengths, targets)
        loss.backward()
        opt.step()
    assert obj.predict(head(x, lengths), lengths) == targets
