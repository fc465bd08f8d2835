"""What a checkpoint's predictions say about modality imbalance: robustness curves, Shapley shares.

Everything here works on outputs stored once per split (`outputs.py`): a missing branch is
re-fused from stored logits (or zeroed stored features for a fusion module), so the
analyses cost a fusion, not another forward pass.
"""
