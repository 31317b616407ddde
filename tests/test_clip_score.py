"""CLIP-SIM: a tiny open_clip model fitted on toy-world frames prefers matching prompts; bad input errors."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vidiff.errors import VidiffError
from vidiff.eval.clip_score import TINY_CLIP_CONFIG, clip_similarity, load_clip, register_model_config
from vidiff.toyworld import ToyWorldDataset

NAME = "vidiff-test-tiny-clip"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: threads only contend
    yield
    torch.set_num_threads(before)


def _fit(scorer, steps=80, seed=0):
    """A few contrastive steps on (one random frame, caption) pairs of toy-world clips."""
    data = ToyWorldDataset(96, num_frames=4, height=32, width=32, seed=seed)
    items = [data[i] for i in range(len(data))]
    videos = torch.stack([it["video"] for it in items])
    tokens = scorer.tokenizer([it["caption"] for it in items])
    model = scorer.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(items), generator=g)[:48]
        t = torch.randint(0, videos.shape[2], (len(idx),), generator=g)
        frames = videos[idx, :, t]
        img = F.normalize(model.encode_image(scorer.preprocess(frames)), dim=-1)
        txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def _items(prompts_shift=0, n=24):
    data = ToyWorldDataset(n, num_frames=6, height=48, width=48, seed=123)  # held-out clips, other size
    items = [data[i] for i in range(n)]
    prompts = [items[(i + prompts_shift) % n]["caption"] for i in range(n)]
    return [(f"{i}.mp4", it["video"], p) for i, (it, p) in enumerate(zip(items, prompts, strict=True))]


def test_fitted_tiny_clip_scores_matching_prompts_above_shuffled_ones():
    torch.manual_seed(0)
    register_model_config(NAME, TINY_CLIP_CONFIG)
    scorer = load_clip(NAME, "random")
    assert scorer.random and scorer.image_size == 32
    before = [clip_similarity(scorer, _items(k), progress=False)["clipsim_mean_cosine"] for k in (0, 5)]
    assert before[0] < before[1] + 0.05  # unfitted: no preference, so the check below can fail
    loss = _fit(scorer)
    matched = clip_similarity(scorer, _items(0), progress=False)
    shuffled = clip_similarity(scorer, _items(5), progress=False)
    assert matched["n_videos"] == 24
    assert matched["clipsim_mean_cosine"] > shuffled["clipsim_mean_cosine"] + 0.05, (loss, matched, shuffled)
    assert matched["clipsim_x100"] == pytest.approx(100 * max(matched["clipsim_mean_cosine"], 0.0))
    per_video = [v["clipsim"] for v in matched["per_video"]]
    assert matched["clipsim_mean_cosine"] == pytest.approx(sum(per_video) / len(per_video))


def test_per_video_score_is_the_mean_over_frames_of_frame_prompt_cosines():
    torch.manual_seed(0)
    register_model_config(NAME, TINY_CLIP_CONFIG)
    scorer = load_clip(NAME, "random")
    name, video, prompt = _items(0, n=1)[0]
    with torch.no_grad():
        frames = scorer.encode_frames(rearrange(video, "c t h w -> t c h w"))
        text = scorer.encode_text([prompt])[0]
    expected = float((frames @ text).mean())
    got = clip_similarity(scorer, [(name, video, prompt)], progress=False)["per_video"][0]["clipsim"]
    assert got == pytest.approx(expected, rel=1e-5)


def test_weights_round_trip_and_bad_input(tmp_path):
    torch.manual_seed(0)
    register_model_config(NAME, TINY_CLIP_CONFIG)
    scorer = load_clip(NAME, "random")
    torch.save(scorer.model.state_dict(), tmp_path / "tiny.pt")
    again = load_clip(NAME, tmp_path / "tiny.pt")
    items = _items(0, n=2)
    a = clip_similarity(scorer, items, progress=False)["clipsim_mean_cosine"]
    assert clip_similarity(again, items, progress=False)["clipsim_mean_cosine"] == pytest.approx(a, rel=1e-6)

    (tmp_path / "junk.pt").write_bytes(b"junk" * 50)
    with pytest.raises(VidiffError, match="corrupt or belongs to another architecture"):
        load_clip(NAME, tmp_path / "junk.pt")
    with pytest.raises(VidiffError, match="does not exist"):
        load_clip(NAME, tmp_path / "missing.pt")
    with pytest.raises(VidiffError, match="--clip-weights"):
        load_clip(NAME, None)
    with pytest.raises(VidiffError, match="unknown open_clip model"):
        load_clip("no-such-model", "random")
    with pytest.raises(VidiffError, match="prompt is empty"):
        clip_similarity(scorer, [("a.mp4", items[0][1], " ")], progress=False)
    with pytest.raises(VidiffError, match="no videos"):
        clip_similarity(scorer, [], progress=False)
