#!/usr/bin/env python3
"""Reference fixtures for pixdex's CLIP (tokenizer and both towers), made by open_clip itself.

Run once, by hand, in a throwaway venv (torch is large; CI never runs this, it reads the
committed outputs):

    python3 -m venv /tmp/clipvenv
    /tmp/clipvenv/bin/pip install torch open-clip-torch==3.3.0 safetensors numpy
    /tmp/clipvenv/bin/python scripts/make-clip-fixtures.py tests/fixtures/clip

Writes into the output folder:
* `tiny.safetensors`, `tiny.pt`: one tiny random-weight CLIP (ViT with 32 px patches at 224 px,
  2 layers per tower, vision width 64, text width 32, head width 16, the real 49 408-token vocab
  and 77-token context), weights rounded to float16 so both files hold exactly the values the
  references were computed with. Every parameter is random (LayerNorm gains and biases too).
* `tiny.json`: the model's shape, the text inputs with open_clip's tokens, and open_clip's
  L2-normalized image and text embeddings, with GELU and with QuickGELU (same weights), for
  4 procedurally generated images (`pixel()` below, mirrored in the Rust test).
* `tokenizer.json`: `SimpleTokenizer` tokens (77, truncated, trailing zeros trimmed) of 1 300+
  strings (flagged where ftfy's mojibake repair changed the text, with the tokens it gives
  without that repair): captions, 18 scripts, emoji sequences, HTML entities, curly quotes, ligatures,
  full-width forms, control characters, very long text, random mixtures, and corner cases: HTML
  after a line with `<`, terminal escapes with non-ASCII digits, U+0345 and other combining marks,
  whitespace and line breaks at either end.
* `vit-b-32-shapes.json`: every key and shape of a full-size open_clip `ViT-B-32` state dict
  (random init, nothing downloaded), for the loader's full-size test.
"""

import json
import math
import os
import random
import sys

import numpy as np
import torch
import open_clip
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip"
os.makedirs(OUT, exist_ok=True)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
IMAGES = 4


def pixel(k, y, x, c):
    """u8 pixel of test image k (224x224 RGB), integer-only so Rust computes the same."""
    return (x * (3 + k) + y * (5 + 2 * k) + c * 77 + k * 31 + (x * y) % 7 + ((x // 16 + y // 16 + k) % 2) * 90) % 256


def images():
    a = np.zeros((IMAGES, 3, 224, 224), dtype=np.float32)
    for k in range(IMAGES):
        ys, xs = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
        for c in range(3):
            px = (xs * (3 + k) + ys * (5 + 2 * k) + c * 77 + k * 31 + (xs * ys) % 7 + ((xs // 16 + ys // 16 + k) % 2) * 90) % 256
            a[k, c] = (px / 255.0 - MEAN[c]) / STD[c]
    return torch.from_numpy(a)


TEXTS = [
    "a photo of a cat",
    "a dog on a beach at sunset",
    "Ünïcödé — “quoted” text, with ﬁne ligatures & emoji 🐶🏖️",
    "",
    "红色的汽车停在雪地里",
    "<end_of_text> inside",
    " ".join(["a very long caption about mountains lakes and forests"] * 12),
    "3 cats and 12 dogs!!!",
]


def tiny_model(quick_gelu):
    vision = CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=32, image_size=224)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    return CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()


def make_models():
    torch.manual_seed(1234)
    gelu = tiny_model(False)
    with torch.no_grad():
        for name, p in gelu.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() == 1 and ("ln" in name or "bias" in name):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif name.endswith("class_embedding") or "positional_embedding" in name or "token_embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else int(np.prod(p.shape[1:]))
                p.copy_(torch.randn_like(p) / math.sqrt(max(fan_in, 1)))
            p.copy_(p.half().float())
    state = {k: v.detach().clone() for k, v in gelu.state_dict().items()}
    quick = tiny_model(True)
    quick.load_state_dict(state)
    return gelu, quick, state


def encode(model, tok):
    x = images()
    with torch.no_grad():
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(tok(TEXTS), normalize=True)
    return img.tolist(), txt.tolist()


def tiny_fixture(tok):
    gelu, quick, state = make_models()
    half = {k: v.half().contiguous() for k, v in state.items()}
    save_file(half, os.path.join(OUT, "tiny.safetensors"))
    torch.save(half, os.path.join(OUT, "tiny.pt"))
    img_g, txt_g = encode(gelu, tok)
    img_q, txt_q = encode(quick, tok)
    ref = {
        "model": {"embed_dim": 24, "vision_width": 64, "text_width": 32, "head_width": 16, "layers": 2, "patch": 32},
        "images": IMAGES,
        "texts": TEXTS,
        "tokens": [trim(t) for t in tok(TEXTS).tolist()],
        "gelu": {"image": img_g, "text": txt_g},
        "quick_gelu": {"image": img_q, "text": txt_q},
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(OUT, "tiny.json"), "w") as f:
        json.dump(ref, f)


def trim(tokens):
    while tokens and tokens[-1] == 0:
        tokens.pop()
    return tokens


def corpus():
    rng = random.Random(77)
    out = []
    subjects = ["cat", "dog", "child", "old man", "red car", "bicycle", "mountain", "lake", "city skyline", "bowl of ramen",
                "birthday cake", "sailboat", "tulip field", "snowy forest", "street market", "lighthouse", "horse", "robot"]
    places = ["on a beach", "at sunset", "in the rain", "under the stars", "in Paris", "on a wooden table", "at night",
              "in a kitchen", "near the river", "in the snow", "at the zoo", "in 1985"]
    styles = ["a photo of", "a blurry photo of", "a close-up of", "an oil painting of", "a drawing of", "a black and white photo of",
              "A PHOTO OF", "two", "three", "a picture of the", "an aerial view of"]
    for _ in range(300):
        out.append(f"{rng.choice(styles)} {rng.choice(subjects)} {rng.choice(places)}")
    scripts = ["Привет, как дела? Кошка на диване", "Γειά σου κόσμε, ΣΟΦΙΑ σοφός", "مرحبا بالعالم قطة", "שלום עולם",
               "नमस्ते दुनिया बिल्ली", "こんにちは世界、猫がソファにいる", "안녕하세요 세계 고양이", "你好，世界！一只猫在沙发上",
               "สวัสดีชาวโลก แมว", "Xin chào thế giới, con mèo", "Merhaba dünya İstanbul ıĞ", "Grüße aus München, Straße",
               "Ça va? Où est la bibliothèque? Œuvre", "¿Dónde está el niño? ¡Hola!", "Zdravo svete, ćevapi đak", "Witaj świecie, źdźbło",
               "Բարեւ աշխարհ", "ሰላም ዓለም", "Tere maailm, õun", "Σίσυφος ΟΔΟΣ"]
    out += scripts
    emoji = ["🐶", "🐱", "🏖️", "👨‍👩‍👧‍👦", "👍🏽", "🇫🇷", "🇯🇵", "❤️", "🔥", "😀", "🎉", "🧑🏿‍🚀", "✈️", "☕", "🌧️", "🏳️‍🌈", "1️⃣", "🫠"]
    for _ in range(120):
        words = [rng.choice(subjects) for _ in range(rng.randint(1, 3))]
        out.append(" ".join(words + [rng.choice(emoji) for _ in range(rng.randint(1, 4))]))
    specials = ["Tom &amp; Jerry", "5 &lt; 6 &gt; 4", "&quot;quoted&quot; &#39;single&#39;", "caf&eacute; na&iuml;ve", "&#x1F600; smile",
                "&amp;amp; double", "fish &amp;chips", "“curly” ‘quotes’ don’t", "ﬁsh ﬂower ﬀ", "ＦＵＬＬ ｗｉｄｔｈ　ｔｅｘｔ １２３",
                "tab\there\nnewline\r\nwindows", "  lots   of    spaces  ", "zero\u200bwidth", "control\x07bell\x1bescape",
                "nbsp\u00a0space", "e\u0301 combining", "ＡＢＣ！", "it's they're we've I'm you'll he'd", "IT'S THEY'RE",
                "don't WON'T", "<start_of_text> hello", "<END_OF_TEXT>", "100% 3.14 1,000,000 2024-01-01", "#hashtag @user",
                "C++ & C# vs. Rust!", "email me: a.b@example.com", "https://example.com/a?b=c&d=e", "α β γ δ", "½ ¼ ² ³ ™ ©",
                "…ellipsis—dash–en", "\u2028line sep", "ｶﾀｶﾅ", "ǅ ǆ Ǆ", "ß ẞ", "İ i̇", "ΣΑΣ σας", "ﬃ ﬄ", "Ⅻ ⅻ", "①②③",
                "𝐁𝐨𝐥𝐝 𝒔𝒄𝒓𝒊𝒑𝒕", "Zalgo: h̵̡e̶l̸l̴o̷", "", "   ", "a", "A", "!", "...", "'s", "'", "12345678901234567890"]
    out += specials
    long_base = "a long description of a photograph showing many different things including mountains, rivers, " \
                "people walking their dogs, children playing football, and a bright red sunset over the sea "
    for n in [1, 2, 3, 5, 8, 20]:
        out.append(long_base * n)
    out.append("supercalifragilisticexpialidocious" * 30)
    out.append("🐶" * 200)
    out.append("猫" * 300)
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'\"-_()[]{}:;/\\@#$%^*+=~`|<>") + \
        list("éèêëàâäôöûüçñßøåæœÉÈÀÇÑÅÆ") + list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД") + list("αβγδεζηθικλμνξοπρστυφχψω") + \
        list("日本語中文한국어ไทยहिन्दीالعربية") + emoji + list("€£¥₹©®™°±×÷§¶•·")
    while len(out) < 1250:
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    # Corner cases added after the random mixtures (so the entries above stay the same):
    # ftfy stops unescaping HTML at the first line with a `<`, for the rest of the text (html.unescape,
    # twice, still runs on everything: the difference shows in upper-case names and deep nesting).
    out += ["x < y\nTom &amp;amp;amp; Jerry", "a &amp;amp;amp; b\n<b>bold</b>\ncaf&EACUTE; &amp;amp;amp;",
            "first &AMP; line\nsecond < line\nthird &EACUTE;\nfourth &amp;amp;amp;amp;", "<tag>\n&NTILDE;o&ntilde;o &lt;b&gt;",
            "&amp;amp;amp; before\r\nthen 3 < 4\r\nthen &amp;amp;amp; after", "no lt here &AMP;&amp;amp;amp;\nnor here &EACUTE;",
            "&lt; is no less-than sign\n&amp;amp;amp; unescaped", "2 &lt; 3 &amp;amp;amp;\n\n\n1 < 2\n&AMP;amp;amp;"]
    # Terminal escapes: `\d` is any Unicode decimal digit.
    out += ["\x1b[\u0661\u0662mred text\x1b[0m plain", "\x1b[\u06f3\u06f1;\u0661mpersian digits", "\x1b[\u0967\u0968mdevanagari \x1b[\uff11\uff12mfull",
            "bold \x1b[1;\u0e51\u0e52mthai\x1b[\U0001D7CEmmath digit", "\x1b[\u00b2mnot a decimal", "\x1b[\u2460mcircled",
            "\x1b[\u0f20\u0f21;\u1040Kmixed scripts", "cat \x1b[\u09e7;\u0be8;3Hdog"]
    # U+0345 (its case folds to iota, a letter) is neither a letter nor "other" for open_clip's regex;
    # other combining marks and circled letters for comparison.
    out += ["a\u0345b", "cat\u0345 dog", "\u0345", "hello \u0345\u0345 world", "\u03b9\u0345 \u03b1\u0345 \u03c9\u0345 \u0399\u0345",
            "x\u0345\u0363y", "e\u0363\u0364\u036f", "a\u1de7b\u1dd3c", "\u24b6\u24d1 circled \u24e9", "\u24d0\u0345",
            "\u0345123", "it's\u0345 \u0345's", "it'\u017f they'\u017f", "<\u017ftart_of_text> x", "\u212a kelvin \u212b angstrom",
            "\u1fbe prosgegrammeni \u1fbe\u0345", "\u0300\u0301 marks alone", "!\u0345?", "\u0345\u20dd enclosing"]
    # Whitespace and line breaks at either end (a trailing U+0085 is a '…' for ftfy).
    out += ["a cat\u0085", "\u0085a cat", "\u0085", "a cat\u00a0", "\u00a0a cat\u00a0", "dog\u2028", "\u2029dog", "\u3000cat\u3000",
            "cat\u202f", "\u1680cat", "\u200bcat\u200b", "cat\u0085\u0085", "\u0085\u00a0\u0085", "cat\u000b", "\u180ecat\u180e",
            "cat\ufeff", "\u0085 \u0085", "cat\u000c\u2003", "two\u0085lines"]
    return out


def tokenizer_fixture(tok):
    import ftfy
    import open_clip.tokenizer as T
    texts = corpus()
    toks = tok(texts).tolist()
    cases = [{"text": t, "tokens": trim(k)} for t, k in zip(texts, toks)]
    # ftfy's mojibake repair (`fix_encoding`) is the one part of the cleaning pixdex does not
    # reproduce: flag the cases it changes and record their tokens without it as well.
    fix_text = ftfy.fix_text
    T.ftfy.fix_text = lambda text: fix_text(text, fix_encoding=False)
    try:
        for c in cases:
            if fix_text(c["text"]) != fix_text(c["text"], fix_encoding=False):
                c["mojibake_repaired"] = True
                c["tokens_without_repair"] = trim(SimpleTokenizer()([c["text"]]).tolist()[0])
    finally:
        T.ftfy.fix_text = fix_text
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump({"open_clip": open_clip.__version__, "cases": cases}, f, ensure_ascii=False)
    return len(texts)


def shapes_fixture():
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(os.path.join(OUT, "vit-b-32-shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0, sort_keys=True)


if __name__ == "__main__":
    tok = SimpleTokenizer()
    tiny_fixture(tok)
    n = tokenizer_fixture(tok)
    shapes_fixture()
    print(f"wrote {OUT}: tiny model, {n} tokenizer cases, ViT-B-32 shapes")
