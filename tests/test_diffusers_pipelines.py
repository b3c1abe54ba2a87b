"""The elastic wrapper inside diffusers' stock pipelines (QwenImagePipeline, StableDiffusion3Pipeline,
FluxPipeline, WanPipeline),
offline: tiny random transformers, prompt embeddings given directly, latents out (no VAE, no text
encoder). Cheap CFG: the unconditional pass runs at a lower budget than the conditional one."""
import copy

import pytest
import torch

pytest.importorskip("transformers")   # diffusers' pipelines import it
from diffusers import (FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel,  # noqa: E402
                       QwenImagePipeline, QwenImageTransformer2DModel, SD3Transformer2DModel,
                       StableDiffusion3Pipeline, WanPipeline, WanTransformer3DModel)

from backbone_suite import randomize_  # noqa: E402
from elit.interop.diffusers import make_elastic  # noqa: E402


def qwen():
    torch.manual_seed(0)
    return randomize_(QwenImageTransformer2DModel(patch_size=2, in_channels=12, out_channels=3, num_layers=4,
                                                  attention_head_dim=8, num_attention_heads=4,
                                                  joint_attention_dim=16, axes_dims_rope=(2, 2, 4))).eval()


def sd3():
    torch.manual_seed(0)
    return randomize_(SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=3, num_layers=4,
                                            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                            joint_attention_dim=16, pooled_projection_dim=24, out_channels=3,
                                            pos_embed_max_size=16)).eval()


def flux():
    torch.manual_seed(0)
    return randomize_(FluxTransformer2DModel(patch_size=1, in_channels=12, out_channels=12, num_layers=2,
                                             num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                             joint_attention_dim=16, pooled_projection_dim=24, guidance_embeds=True,
                                             axes_dims_rope=(4, 6, 6))).eval()


def record_budgets(elastic):
    """Wrap the wrapper's inner call to record (pass, batch, budget) of every forward it makes."""
    calls, run = [], elastic._run

    def recording(kwargs, kept):
        calls.append((elastic._pass, kwargs["hidden_states"].shape[0], kept))
        return run(kwargs, kept)
    elastic._run = recording
    return calls


def qwen_call(pipe, attention_kwargs, g=0):
    e = torch.Generator().manual_seed(5)
    return pipe(prompt_embeds=torch.randn(1, 6, 16, generator=e), prompt_embeds_mask=torch.ones(1, 6, dtype=torch.long),
                negative_prompt_embeds=torch.randn(1, 6, 16, generator=e),
                negative_prompt_embeds_mask=torch.ones(1, 6, dtype=torch.long), true_cfg_scale=2.0, height=128,
                width=128, num_inference_steps=2, output_type="latent", attention_kwargs=attention_kwargs,
                generator=torch.Generator().manual_seed(g)).images


def test_qwen_pipeline_runs_cheap_cfg_at_two_budgets_and_leaves_the_callers_dict_alone():
    tr = qwen()
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
                             tokenizer=None, transformer=tr)
    reference = qwen_call(pipe, None)                      # the stock transformer
    elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=(4, 4), input_size=16)
    pipe.transformer = elastic
    calls = record_budgets(elastic)
    outputs = {}
    for cond, uncond in ((16, 2), (8, 4)):
        kwargs = {"elit_budget": cond, "elit_uncond_budget": uncond}
        kept = copy.deepcopy(kwargs)
        calls.clear()
        outputs[cond] = qwen_call(pipe, kwargs)
        assert kwargs == kept                                                     # never mutated
        assert calls == [("cond", 1, cond), ("uncond", 1, uncond)] * 2          # 2 steps, one call per pass
        assert outputs[cond].shape == reference.shape and torch.isfinite(outputs[cond]).all()
    assert (outputs[16] - outputs[8]).abs().max() > 1e-3
    # with the interface off, the wrapper inside the pipeline is the transformer itself
    pipe.transformer = make_elastic(tr, elit=False, input_size=16)
    assert torch.equal(qwen_call(pipe, {}), reference)


def test_sd3_pipeline_splits_its_batched_cfg_call_into_two_budgets():
    tr = sd3()
    pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    e = torch.Generator().manual_seed(5)
    prompts = dict(prompt_embeds=torch.randn(1, 6, 16, generator=e), pooled_prompt_embeds=torch.randn(1, 24, generator=e),
                   negative_prompt_embeds=torch.randn(1, 6, 16, generator=e),
                   negative_pooled_prompt_embeds=torch.randn(1, 24, generator=e))

    def call(kwargs):
        return pipe(**prompts, guidance_scale=3.0, height=128, width=128, num_inference_steps=2, output_type="latent",
                    joint_attention_kwargs=kwargs, generator=torch.Generator().manual_seed(0)).images
    reference = call(None)
    elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=(4, 4), input_size=16)
    pipe.transformer = elastic
    calls = record_budgets(elastic)
    kwargs = {"elit_budget": 8, "elit_uncond_budget": 2}
    out = call(kwargs)
    assert kwargs == {"elit_budget": 8, "elit_uncond_budget": 2}
    assert calls == [(None, 1, 2), (None, 1, 8)] * 2         # [uncond ; cond] halves at their own budgets
    assert out.shape == reference.shape and torch.isfinite(out).all()
    calls.clear()
    same = call({"elit_budget": 8})                           # one budget: one batched call
    assert calls == [(None, 2, 8)] * 2 and (same - out).abs().max() > 1e-4
    pipe.transformer = make_elastic(tr, elit=False, input_size=16)
    assert torch.equal(call({}), reference)


def test_the_split_equals_two_separate_calls():
    tr = sd3()
    elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=(4, 4), input_size=16)
    g = torch.Generator().manual_seed(1)
    call = dict(hidden_states=torch.randn(4, 3, 16, 16, generator=g), encoder_hidden_states=torch.randn(4, 6, 16, generator=g),
                pooled_projections=torch.randn(4, 24, generator=g), timestep=torch.tensor([700.0] * 4))
    with torch.no_grad():
        both = elastic(**call, joint_attention_kwargs={"elit_budget": 8, "elit_uncond_budget": 2}).sample
        uncond = elastic(**{k: v[:2] for k, v in call.items()}, budget=2).sample
        cond = elastic(**{k: v[2:] for k, v in call.items()}, budget=8).sample
    assert torch.equal(both, torch.cat([uncond, cond]))


def test_elit_sample_refuses_a_text_model_before_writing(tmp_path, capsys):
    """The command takes class labels; a text-to-image model is pointed to the Python call instead."""
    import elit
    from elit.cli import main
    elit.save_pretrained(make_elastic(qwen(), head_depth=1, tail_depth=1, window=(4, 4), input_size=16), tmp_path / "m")
    rc = main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 2 and "text-to-image model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def flux_call(pipe, kwargs):
    e = torch.Generator().manual_seed(5)
    return pipe(prompt_embeds=torch.randn(1, 6, 16, generator=e), pooled_prompt_embeds=torch.randn(1, 24, generator=e),
                negative_prompt_embeds=torch.randn(1, 6, 16, generator=e),
                negative_pooled_prompt_embeds=torch.randn(1, 24, generator=e), true_cfg_scale=2.0, guidance_scale=3.5,
                height=128, width=128, num_inference_steps=2, output_type="latent", joint_attention_kwargs=kwargs,
                generator=torch.Generator().manual_seed(0)).images


def test_flux_pipeline_runs_its_passes_at_their_budgets():
    tr = flux()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=tr)
    reference = flux_call(pipe, None)
    elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=(4, 4), input_size=16, text_tokens=6)
    pipe.transformer = elastic
    calls = record_budgets(elastic)
    kwargs = {"elit_budget": 8, "elit_uncond_budget": 2}
    low = flux_call(pipe, kwargs)
    assert kwargs == {"elit_budget": 8, "elit_uncond_budget": 2}
    assert calls == [("cond", 1, 8), ("uncond", 1, 2)] * 2
    assert low.shape == reference.shape and torch.isfinite(low).all()
    assert (flux_call(pipe, {"elit_budget": 16, "elit_uncond_budget": 16}) - low).abs().max() > 1e-3
    pipe.transformer = make_elastic(tr, elit=False, input_size=16, text_tokens=6)
    assert torch.equal(flux_call(pipe, {}), reference)


def wan():
    torch.manual_seed(0)
    return randomize_(WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                            in_channels=3, out_channels=3, text_dim=16, freq_dim=32, ffn_dim=64,
                                            num_layers=4, rope_max_seq_len=32)).eval()


def wan_call(pipe, kwargs):
    """5 frames of 64x128 px: 2 latent frames of 8x16, a 2x4x8 token grid."""
    e = torch.Generator().manual_seed(5)
    return pipe(prompt_embeds=torch.randn(1, 6, 16, generator=e), negative_prompt_embeds=torch.randn(1, 6, 16, generator=e),
                guidance_scale=2.0, height=64, width=128, num_frames=5, num_inference_steps=2, output_type="latent",
                attention_kwargs=kwargs, generator=torch.Generator().manual_seed(0)).frames


@pytest.mark.parametrize("per_token", [False, True], ids=["wan2.1", "wan2.2-ti2v"])
def test_wan_pipeline_runs_its_passes_at_their_budgets(per_token):
    """WanPipeline calls cond and uncond apart (cache_context); with expand_timesteps (Wan 2.2 TI2V)
    it passes one timestep per token. Interface off, the wrapper in the pipeline is the transformer."""
    tr = wan()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(),
                       transformer=tr, expand_timesteps=per_token)
    reference = wan_call(pipe, None)
    geometry = dict(input_size=8, width=16, frames=2, text_tokens=6)
    elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=(2, 2, 4), **geometry)
    randomize_(elastic.model.interface)   # a trained-looking Write: a zero one makes every budget head + tail
    pipe.transformer = elastic
    calls = record_budgets(elastic)
    kwargs = {"elit_budget": 8, "elit_uncond_budget": 2}
    low = wan_call(pipe, kwargs)
    assert kwargs == {"elit_budget": 8, "elit_uncond_budget": 2}
    assert calls == [("cond", 1, 8), ("uncond", 1, 2)] * 2
    assert low.shape == reference.shape == (1, 3, 2, 8, 16) and torch.isfinite(low).all()
    assert (wan_call(pipe, {"elit_budget": 16, "elit_uncond_budget": 16}) - low).abs().max() > 1e-3
    pipe.transformer = make_elastic(tr, elit=False, **geometry)
    assert torch.equal(wan_call(pipe, {}), reference)
