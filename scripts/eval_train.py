"""Judge a trained style model on the photos its training held out: a contact sheet and style losses.

    python scripts/eval_train.py MODEL.safetensors -o contact.png [--photos P1.jpg ...] [--count 4]

Everything else comes from the model file's training config: the style image,
its size, the loss network and weights, the crop size and the held-out photos.
For each photo it prints the weighted style loss (``fastnst.losses``, the same
code training used) of the photo itself and of its stylization; a model that
carries the style brings the second far below the first. The contact sheet has
one row per photo: the photo | its stylization.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from fastnst.checkpoint import load_model
from fastnst.images import load_image, save_image
from fastnst.losses import LossSpec, content_targets, perceptual_losses, style_grams
from fastnst.pretrained import load_loss_network
from fastnst.train.data import load_photo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True, help="contact sheet (.png)")
    parser.add_argument("--photos", nargs="+", help="photos to judge (default: the model's held-out photos)")
    parser.add_argument("--count", type=int, default=4, help="at most this many photos (default 4)")
    args = parser.parse_args(argv)

    model, info = load_model(args.model)
    config = info.config
    if not config.get("loss"):
        print(f"{args.model}: no training config in the file; it was not written by fastnst train", file=sys.stderr)
        return 1
    spec = LossSpec(**config["loss"])
    photos = (args.photos or config.get("held_out") or [])[: args.count]
    if not photos:
        print("no photos: the run held none out; pass --photos", file=sys.stderr)
        return 1
    size = config["image_size"]
    vgg = load_loss_network(spec)
    style = load_image(config["style"][0], max_size=config.get("style_size"))[None]
    grams = style_grams(vgg, style, spec)

    rows, before, after = [], [], []
    with torch.no_grad():
        for path in photos:
            photo = load_photo(path, size)[None]
            styled = model(photo).clamp(0, 1)
            targets = content_targets(vgg, photo, spec)
            own = perceptual_losses(vgg, photo, targets, grams, spec)
            out = perceptual_losses(vgg, styled, targets, grams, spec)
            before.append(own["style"].item())
            after.append(out["style"].item())
            print(f"{Path(path).name:40} style loss: photo {before[-1]:10.4g}  stylized {after[-1]:10.4g}  "
                  f"(content loss of the stylization {out['content'].item():.4g})")
            rows.append(torch.cat([photo[0], styled[0]], dim=2))
    ratio = statistics.median(after) / statistics.median(before)
    print(f"median style loss: photos {statistics.median(before):.4g}, stylized {statistics.median(after):.4g} "
          f"(ratio {ratio:.3f})")
    save_image(torch.cat(rows, dim=1), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
