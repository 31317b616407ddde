"""`vidiff encode --lowres`: the paired latent cache of the super-resolution stages (target latents + the
latents of the same clip degraded: every 2nd frame for TSR, half the height and width for SSR)."""

import json

import pytest
import torch
import torch.nn.functional as F
from cli import run_vidiff
from safetensors.torch import load_file, save_file

from vidiff.errors import VidiffError
from vidiff.models.vae import CausalVAE3D
from vidiff.toyworld import ToyWorldDataset
from vidiff.training.latent_cache import encode_toyworld, load_latent_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def _encode(vae_dir, videos: torch.Tensor) -> torch.Tensor:
    vae = CausalVAE3D.from_pretrained(vae_dir)
    with torch.no_grad():
        return vae.normalize_latents(vae.encode(videos).mode())


def test_tsr_cache_pairs_each_clip_with_its_every_second_frame(tiny_vae_dir, tmp_path):
    out = encode_toyworld(tiny_vae_dir, 3, tmp_path / "c", num_frames=17, size=(16, 16), seed=2, batch_size=2,
                          progress=False, lowres="frames")
    cache = load_latent_cache(out)
    assert cache.lowres_kind == "frames" and len(cache.lowres) == len(cache.latents) == 3
    assert all(z.shape == (4, 5, 4, 4) for z in cache.latents)  # 17 frames at 2f fps
    assert all(z.shape == (4, 3, 4, 4) for z in cache.lowres)  # 9 frames at f fps
    videos = torch.stack([ToyWorldDataset(3, 17, 16, 16, seed=2)[i]["video"] for i in range(3)])
    torch.testing.assert_close(torch.stack(list(cache.latents)), _encode(tiny_vae_dir, videos), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(list(cache.lowres)), _encode(tiny_vae_dir, videos[:, :, ::2]), atol=1e-5, rtol=1e-5)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["lowres"], meta["lowres_factor"], meta["crop"]) == ("frames", 2, None)
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(it["lowres"] is True and (it["frames"], it["lowres_frames"]) == (5, 3) for it in items)


def test_ssr_cache_crops_target_and_conditioning_alike(tiny_vae_dir, tmp_path):
    # 16x24 frames cropped to 16x16: the crop can only slide sideways, so the test can try all 9 places
    out = encode_toyworld(tiny_vae_dir, 3, tmp_path / "c", num_frames=5, size=(16, 24), seed=1, progress=False,
                          lowres="space", crop=(16, 16))
    cache = load_latent_cache(out)
    assert all(z.shape == (4, 2, 4, 4) for z in cache.latents)
    assert all(z.shape == (4, 2, 2, 2) for z in cache.lowres)
    ds = ToyWorldDataset(3, 5, 16, 24, seed=1)
    for i in range(3):
        video = ds[i]["video"]
        crops = torch.stack([video[:, :, :, x : x + 16] for x in range(9)])
        match = (_encode(tiny_vae_dir, crops) - cache.latents[i]).flatten(1).abs().amax(1) < 1e-5
        assert match.any(), "the target is not a 16x16 crop of the clip"
        crop = crops[match][:1]  # crops that match alike are alike (plain background where they differ)
        area = F.interpolate(crop, size=(5, 8, 8), mode="area")  # independent of the cache's own resize
        torch.testing.assert_close(_encode(tiny_vae_dir, area)[0], cache.lowres[i], atol=1e-5, rtol=1e-5)


def test_ssr_cache_from_the_cli(tiny_vae_dir, toy_manifest, tmp_path):
    r = run_vidiff("encode", "--checkpoint", tiny_vae_dir, "--out", tmp_path / "c", "--manifest", toy_manifest,
                   "--frames", "9", "--height", "16", "--width", "16", "--lowres", "space", "--crop", "16", "16",
                   timeout=300)
    assert r.returncode == 0, r.stderr
    cache = load_latent_cache(tmp_path / "c")
    assert cache.captions == ["clip 0", "clip 2"]
    assert [tuple(z.shape) for z in cache.latents] == [(4, 3, 4, 4)] * 2
    assert [tuple(z.shape) for z in cache.lowres] == [(4, 3, 2, 2)] * 2
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["crop"] == [16, 16]


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"lowres": "frames", "num_frames": 13}, r"use 1 \+ 8k frames \(e\.g\. 9 or 17\)"),
        ({"lowres": "frames", "num_frames": 5}, r"use 1 \+ 8k frames"),
        ({"lowres": "space", "size": (20, 20)}, r"--height/--width 20 20 is not a multiple of 8 .*use e\.g\. --height/--width 16 16"),
        ({"lowres": "space", "crop": (12, 16)}, r"--crop 12 16 is not a multiple of 8 .*use e\.g\. --crop 8 16"),
        ({"crop": (32, 16)}, r"--crop 32 16 does not fit in the 16x16 frames .*crop at most the frame size"),
        ({"lowres": "time"}, r"unknown --lowres 'time'; use 'frames' .* or 'space'"),
        ({"lowres": "frames", "image_share": 0.2}, r"SR stage trains on videos only; leave --image-share at 0"),
    ],
)
def test_bad_sr_settings_name_the_fix(tiny_vae_dir, tmp_path, settings, fix):
    kwargs = {"num_frames": 9, "size": (16, 16), "progress": False, **settings}
    with pytest.raises(VidiffError, match=fix):
        encode_toyworld(tiny_vae_dir, 2, tmp_path / "c", **kwargs)


def test_cache_without_lowres_loads_as_before(tiny_vae_dir, tmp_path):
    out = encode_toyworld(tiny_vae_dir, 2, tmp_path / "c", num_frames=5, size=(16, 16), progress=False)
    assert "lowres" not in json.loads((out / "meta.json").read_text())  # a plain cache's meta is unchanged
    cache = load_latent_cache(out)
    assert cache.lowres is None and cache.lowres_kind == ""


def test_sr_cache_missing_a_lowres_tensor_is_a_clear_error(tiny_vae_dir, tmp_path):
    out = encode_toyworld(tiny_vae_dir, 2, tmp_path / "c", num_frames=9, size=(16, 16), seed=4, progress=False,
                          lowres="frames")
    shard = load_file(str(out / "shard-00000.safetensors"))
    del shard["lowres_1"]
    save_file(shard, str(out / "shard-00000.safetensors"))
    with pytest.raises(VidiffError, match=rf"{out}: item 1 \(toyworld-4-000001\) has no low-res latents .*"
                                          r"vidiff encode --lowres frames"):
        load_latent_cache(out)
