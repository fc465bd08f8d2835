"""Token corruption: content ids swapped with probability σ, special and padding positions kept."""

import torch

from igm_cli.analysis.corruption import kept_positions, replace_tokens


def token_rows():
    # [CLS]=1 a b c [SEP]=2 d e [SEP]=2 [PAD]=0 ...: a pair, then padding; and a single segment
    ids = torch.tensor([[1, 10, 11, 12, 2, 13, 14, 2, 0, 0], [1, 20, 21, 22, 23, 24, 2, 0, 0, 0]])
    mask = (ids != 0).long()
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [0] * 10])
    return torch.stack([ids, mask, types], 1).repeat(500, 1, 1)  # (1000, 3, 10)


def test_kept_positions_are_padding_the_first_token_and_segment_ends():
    x = token_rows()[:2]
    kept = kept_positions(x[:, 1], x[:, 2])
    assert kept[0].tolist() == [True, False, False, False, True, False, False, True, True, True]
    assert kept[1].tolist() == [True, False, False, False, False, False, True, True, True, True]


def test_swaps_content_tokens_at_rate_sigma_from_the_allowed_ids_only():
    x = token_rows()
    allowed = torch.arange(30, 60)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(replace_tokens(x, 0.0, allowed, g), x)
    out = replace_tokens(x, 0.3, allowed, torch.Generator().manual_seed(0))
    content = ~kept_positions(x[:, 1], x[:, 2])
    changed = out[:, 0] != x[:, 0]
    assert not changed[~content].any()  # [CLS], [SEP], padding untouched
    assert torch.equal(out[:, 1:], x[:, 1:])  # mask and token types untouched
    assert abs(changed[content].float().mean().item() - 0.3) < 0.03  # 8,000 content tokens
    assert set(out[:, 0][changed].tolist()) <= set(allowed.tolist())
    more = replace_tokens(x, 0.6, allowed, torch.Generator().manual_seed(0))
    assert (more[:, 0] != x[:, 0])[changed].all()  # same draws: what σ = 0.3 swapped, σ = 0.6 swaps too
