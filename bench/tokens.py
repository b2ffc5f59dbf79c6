"""The token estimate's error: `shared.tokens.request_tokens` against exact o200k_base and cl100k_base counts.

Builds a fixed sample of chat requests (seeded, from the word lists and characters below; nothing is downloaded) in
categories — English prose, code, JSON, numbers, ids and hashes, German/French, Chinese/Japanese, Arabic, emoji,
short and long messages, system + user, multi-part content, named conversations, a realistic mix — and compares
the estimate with an exact count by a real tokenizer, `bpe-openai` (it ships both encodings in its wheel). When
`tiktoken` is importable too, every text is also counted by tiktoken seeded with the same encoding files (checked
against the hashes tiktoken itself expects, so nothing is downloaded) and the two must agree.

The exact count of a request follows OpenAI's chat framing (the cookbook's `num_tokens_from_messages` for the gpt-4
and gpt-4o families): 3 tokens a message, plus its role (one token), its content, and for a `name` the name's tokens
plus 1; plus 3 for the reply's priming. The text of a multi-part content is counted part by part. The estimate frames
a message with 4 tokens (3 + the role) and a name with its text plus 1, as OpenAI does. The second table compares the
text rule alone (`text_tokens(text)` against the text's tokens, per content string or part), with no framing to hide
in. The third measures the rule before this one (bytes / 3) and others on the same requests, with the same framing.
Before the tables, the bench checks that `text_tokens` counts every text as the rule written plainly here does.

The project's venv is left as it is: run the bench from a throwaway venv with the project on sys.path
(`shared/tokens.py` is stdlib only):

    python3 -m venv /tmp/tokbench && /tmp/tokbench/bin/pip install bpe-openai   # tiktoken too, for the cross-check
    /tmp/tokbench/bin/python bench/tokens.py [--per-category 40] [--seed 11]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import math
import random
import re
import string
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shared.tokens
from shared.tokens import request_tokens, text_tokens

ENCODINGS = ("o200k_base", "cl100k_base")
HOW_TO_RUN = """bench/tokens.py needs the tokenizer package bpe-openai, which the project's venv does not have (and
must not get). Run it from a throwaway venv, from the project root:

    python3 -m venv /tmp/tokbench && /tmp/tokbench/bin/pip install bpe-openai   # add tiktoken for the cross-check
    /tmp/tokbench/bin/python bench/tokens.py
"""

# Word lists and characters --------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return text.split()


ENGLISH = words("""
the of and to in is that it was for on are as with his they at be this from have or by one had not but
what all were when we there can an your which their said if do will each about how up out them then she many some so
these would other into has more her two like him see time could no make than first been its who now people my made
over did down only way find use may water long little very after words called just where most know get through back
much before go good new write our used me man too any day same right look think also around another came come work
three word must because does part even place well such here take why things help put years different away again
off went old number great tell men say small every found still between name should home big give air line set own
under read last never us left end along while might next sound below saw something thought both few those always
looks show large often together asked house don't world going want school important until form food keep children
feet land side without boy once animals life enough took sometimes four head above kind began almost live page got
earth need far hand high year mother light parts country father let night following picture being study second eyes
soon times story boys since white days ever paper hard near sentence better best across during today others however
sure means knew it's try told young miles sun ways thing whole hear example heard several change answer room sea
against top turned learn point city play toward five using himself usually customer invoice shipment quarterly
revenue analysis summarize classify sentiment translate extract deadline meeting schedule contract agreement
warranty refund subscription onboarding dashboard deployment configuration authentication throughput latency
regression hypothesis experiment evaluation""")

GERMAN = words("""der die das und ist nicht ein eine zu mit auf für sich dem den von wir sie es Größe über für Straße
Mädchen Bäume schön müssen können würde Überraschung Fußgänger Gebäude Krankenhaus Rechnung Lieferung Vertrag
Kündigung Bestellung Zahlung Kunde Mitarbeiter Unternehmen Geschäftsführer Verfügbarkeit Rückerstattung
Benutzeroberfläche Datenschutzgrundverordnung Herausforderung Entwicklung Ergebnis Zusammenfassung wichtig heute
morgen gestern immer wieder vielleicht natürlich außerdem während Änderung prüfen bestätigen schließlich gemäß
""")

FRENCH = words("""le la les et est pas un une de du des pour avec sur dans nous vous ils elle être avoir très déjà où
garçon façon français réponse problème système élève fenêtre hôpital forêt château café Noël naïf cœur sœur
facture livraison contrat résiliation commande paiement client employé entreprise directeur général disponibilité
remboursement interface développement résultat synthèse aujourd'hui demain hier toujours peut-être évidemment
également pendant modification vérifier confirmer enfin conformément qu'il c'est l'équipe d'abord""")

CHINESE = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天"
    "而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些"
    "与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门"
    "相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华"
    "报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象"
    "记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队"
    "订单客户发票退款合同服务数据模型分析总结翻译问题答案系统用户产品价格质量时间地址电话邮件"
)
JAPANESE = words("""私 あなた 彼 彼女 これ それ あれ 日本 日本語 東京 大阪 会社 仕事 時間 今日 明日
昨日 学校 先生 学生 電車 駅 天気 雨 桜 山 川 海 食べる 飲む 行く 来る 見る 書く 読む 話す 分かる 思う
請求書 注文 返金 契約 顧客 配送 確認 要約 翻訳 分析 お願いします ありがとうございます すみません こんにちは
よろしく カタカナ コンピューター データ サービス メール パスワード アカウント ダウンロード""")
JAPANESE_PARTICLES = words("は が を に で と の も へ から まで です ます でした ません")

ARABIC = words("""مرحبا السلام عليكم كتاب مدرسة الطالب يذهب إلى في من على هذا ذلك كان الله العربية اللغة جميل كبير صغير
بيت سيارة مدينة عمل وقت يوم شكرا نعم لا أنا أنت هو هي نحن الذي التي قال جديد الحكومة الناس العالم الماء الشمس
القمر فاتورة طلب استرداد عقد العميل الشحن تأكيد ملخص ترجمة تحليل البيانات المستخدم المنتج السعر الجودة الخدمة
الشركة الموظف الاجتماع الأسبوع القادم بسرعة ممكن""")

EMOJI = [
    "😀", "😂", "🥲", "😍", "🤔", "😭", "😡", "👍", "👎", "🙏", "👏", "🔥", "✨", "🎉", "❤️", "💔", "✅", "❌", "⚠️",
    "🚀", "📦", "💸", "📈", "📉", "🛒", "☕", "🍕", "🌍", "🐛", "🤖", "👍🏽", "👋🏿", "🧑🏻‍💻", "👩‍🔬", "👨‍👩‍👧‍👦",
    "🏳️‍🌈", "🇩🇪", "🇫🇷", "🇯🇵", "🇸🇦", "1️⃣", "#️⃣", "🫠", "🥹", "🪿",
]  # fmt: skip

PYTHON_TYPES = ("int", "str", "float", "bool", "list[str]", "dict[str, Any]", "None")
JS_KEYWORDS = ("const", "let")
TLDS = ("com", "org", "de", "fr", "io")


# Text generators ------------------------------------------------------------------------------------------------


def sentence(rng: random.Random, words: list[str], low: int = 6, high: int = 20) -> str:
    chosen = [rng.choice(words) for _ in range(rng.randint(low, high))]
    for index in range(2, len(chosen) - 2):
        if rng.random() < 0.08:
            chosen[index] += ","
    text = " ".join(chosen)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def prose(rng: random.Random, words: list[str], count: int) -> str:
    """About `count` words of sentences, in paragraphs."""
    sentences, total = [], 0
    while total < count:
        sentences.append(sentence(rng, words))
        total += sentences[-1].count(" ") + 1
    paragraphs = []
    while sentences:
        take = rng.randint(2, 6)
        paragraphs.append(" ".join(sentences[:take]))
        sentences = sentences[take:]
    return "\n\n".join(paragraphs)


def english(rng: random.Random) -> str:
    return prose(rng, ENGLISH, rng.randint(50, 400))


def identifier(rng: random.Random, camel: bool = False) -> str:
    parts = [rng.choice(ENGLISH).replace("'", "") for _ in range(rng.randint(1, 3))]
    if camel:
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    return "_".join(parts)


def python_code(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 4)):
        args = [f"{identifier(rng)}: {rng.choice(PYTHON_TYPES)}" for _ in range(rng.randint(0, 3))]
        lines.append(f"def {identifier(rng)}({', '.join(args)}) -> {rng.choice(PYTHON_TYPES)}:")
        lines.append(f'    """{sentence(rng, ENGLISH, 4, 12)}"""')
        for _ in range(rng.randint(2, 10)):
            depth = "    " * rng.randint(1, 3)
            kind = rng.random()
            if kind < 0.3:
                lines.append(f"{depth}{identifier(rng)} = {identifier(rng)}.{identifier(rng)}({rng.randint(0, 999)})")
            elif kind < 0.5:
                lines.append(f"{depth}if {identifier(rng)} is None or len({identifier(rng)}) > {rng.randint(1, 64)}:")
            elif kind < 0.65:
                lines.append(f"{depth}# {sentence(rng, ENGLISH, 3, 10)}")
            elif kind < 0.8:
                lines.append(f'{depth}raise ValueError(f"{{{identifier(rng)}!r}} is not a {rng.choice(ENGLISH)}")')
            else:
                lines.append(f"{depth}for {identifier(rng)} in range({rng.randint(2, 100)}):")
        lines.append(f"    return {identifier(rng)}\n")
    return "\n".join(lines)


def javascript_code(rng: random.Random) -> str:
    lines = [f"export async function {identifier(rng, camel=True)}({identifier(rng, camel=True)}) {{"]
    for _ in range(rng.randint(3, 14)):
        kind = rng.random()
        if kind < 0.4:
            lines.append(
                f"  {rng.choice(JS_KEYWORDS)} {identifier(rng, camel=True)} = await "
                f"{identifier(rng, camel=True)}.{identifier(rng, camel=True)}({rng.randint(0, 99)});"
            )
        elif kind < 0.6:
            comment = sentence(rng, ENGLISH, 2, 6)
            lines.append(f"  if (!{identifier(rng, camel=True)}?.length) return null; // {comment}")
        elif kind < 0.8:
            lines.append(f"  console.log(`${{{identifier(rng, camel=True)}}} => ${{JSON.stringify(res)}}`);")
        else:
            lines.append(f"  for (const x of {identifier(rng, camel=True)}) {{ total += x * {rng.random():.3f}; }}")
    lines.append("}")
    return "\n".join(lines)


def code(rng: random.Random) -> str:
    snippet = python_code(rng) if rng.random() < 0.6 else javascript_code(rng)
    return f"{sentence(rng, ENGLISH, 4, 10)}\n\n```\n{snippet}\n```" if rng.random() < 0.5 else snippet


def record(rng: random.Random) -> dict[str, Any]:
    first = rng.choice(("Anna", "José", "Zoë", "Björn", "François", "Li", "Amir", "Ngozi", "Søren", "Chloé"))
    last = rng.choice(("Müller", "García", "Dubois", "Nakamura", "Okafor", "Smith", "Łukasz", "Öztürk"))
    zip_code = rng.randint(0, 99999)
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{rng.randint(1, 999)}@example.{rng.choice(TLDS)}",
        "amount": round(rng.uniform(0, 10_000), 2),
        "quantity": rng.randint(1, 500),
        "active": rng.random() < 0.7,
        "tags": [rng.choice(ENGLISH) for _ in range(rng.randint(0, 4))],
        "address": {"street": f"{rng.randint(1, 300)} {rng.choice(ENGLISH).title()} St", "zip": f"{zip_code:05d}"},
        "createdAt": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
        "note": sentence(rng, ENGLISH, 3, 12) if rng.random() < 0.5 else None,
    }


def json_text(rng: random.Random) -> str:
    records = [record(rng) for _ in range(rng.randint(1, 12))]
    style = rng.random()
    if style < 0.4:
        return json.dumps(records, indent=2)
    if style < 0.7:
        return json.dumps(records, separators=(",", ":"))
    return json.dumps(records, ensure_ascii=False)


def numbers(rng: random.Random) -> str:
    shape = rng.randrange(6)
    if shape == 0:  # a CSV table
        rows = ["date,region,units,price,revenue"]
        for _ in range(rng.randint(5, 80)):
            units, price = rng.randint(0, 5000), round(rng.uniform(0.5, 999), 2)
            day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            rows.append(f"{day},{rng.randint(1, 9)},{units},{price},{units * price:.2f}")
        return "\n".join(rows)
    if shape == 1:  # a grid of small integers, as in matrices and puzzles
        size = rng.randint(3, 12)
        return "\n".join(" ".join(str(rng.randint(0, 9)) for _ in range(size)) for _ in range(size))
    if shape == 2:  # measurements
        return ", ".join(f"{rng.uniform(-100, 100):.{rng.randint(1, 5)}f}" for _ in range(rng.randint(10, 200)))
    if shape == 3:  # amounts and identifiers in a sentence
        parts = []
        for _ in range(rng.randint(3, 20)):
            parts.append(
                f"Invoice {rng.randint(10**6, 10**9)} of ${rng.randint(1, 99_999):,}.{rng.randint(0, 99):02d} "
                f"due {rng.randint(1, 12)}/{rng.randint(1, 28)}/2024, call +1 {rng.randint(200, 999)}-"
                f"{rng.randint(100, 999)}-{rng.randint(1000, 9999)}."
            )
        return " ".join(parts)
    if shape == 4:  # long integers
        return "\n".join(str(rng.getrandbits(rng.randint(20, 256))) for _ in range(rng.randint(3, 40)))
    return " ".join(str(rng.randint(0, 1000)) for _ in range(rng.randint(10, 300)))  # a list of integers


def identifiers(rng: random.Random) -> str:
    """Ids, digests and base64, as prompts carry them (the worst case for any rule by bytes: a token a byte or two)."""
    parts = []
    for _ in range(rng.randint(1, 20)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(f"order {uuid.UUID(int=rng.getrandbits(128))}")
        elif kind == 1:
            parts.append(f"sha256 {rng.getrandbits(256):064x}")
        elif kind == 2:
            parts.append(f"token {base64.b64encode(rng.randbytes(rng.randint(12, 96))).decode()}")
        else:
            parts.append(f"key {''.join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))}")
    return "; ".join(parts)


def german_french(rng: random.Random) -> str:
    return prose(rng, GERMAN if rng.random() < 0.5 else FRENCH, rng.randint(20, 400))


def chinese(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 30)):
        sentence_chars = "".join(rng.choice(CHINESE) for _ in range(rng.randint(5, 30)))
        sentences.append(sentence_chars + rng.choice("。。。\uff1f\uff01"))
    return "".join(sentences)


def japanese(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 30)):
        parts = []
        for _ in range(rng.randint(2, 8)):
            parts.append(rng.choice(JAPANESE) + rng.choice(JAPANESE_PARTICLES))
        sentences.append("".join(parts) + rng.choice("。。。、"))
    return "".join(sentences)


def chinese_japanese(rng: random.Random) -> str:
    return chinese(rng) if rng.random() < 0.5 else japanese(rng)


def arabic(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 25)):
        sentences.append(" ".join(rng.choice(ARABIC) for _ in range(rng.randint(4, 16))) + rng.choice(("،", ".", "؟")))
    return " ".join(sentences)


def emoji(rng: random.Random) -> str:
    if rng.random() < 0.3:  # reactions only
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 60)))
    words = [rng.choice(ENGLISH) for _ in range(rng.randint(5, 120))]
    for index in range(len(words)):
        if rng.random() < 0.3:
            words[index] += " " + "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    return " ".join(words)


def short(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.3:
        return rng.choice(("hi", "ok", "?", "yes", "no", "thanks!", "1", "42", "👍", "continue", "好", "はい", "نعم"))
    if shape < 0.6:
        return " ".join(rng.choice(ENGLISH) for _ in range(rng.randint(1, 8)))
    return sentence(rng, ENGLISH, 2, 10)


TEXTS: dict[str, Callable[[random.Random], str]] = {
    "english": english,
    "code": code,
    "json": json_text,
    "numbers": numbers,
    "ids and hashes": identifiers,
    "german/french": german_french,
    "chinese/japanese": chinese_japanese,
    "arabic": arabic,
    "emoji": emoji,
}


# Requests ---------------------------------------------------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def system(rng: random.Random) -> dict[str, Any]:
    return {"role": "system", "content": prose(rng, ENGLISH, rng.randint(15, 80))}


def single(make: Callable[[random.Random], str]) -> Callable[[random.Random], dict[str, Any]]:
    return lambda rng: {"messages": [user(make(rng))]}


def long_request(rng: random.Random) -> dict[str, Any]:
    text = prose(rng, ENGLISH, rng.randint(2000, 6000))
    return {"messages": [system(rng), user(f"Summarize the following document.\n\n{text}")]}


def system_user(rng: random.Random) -> dict[str, Any]:
    return {"messages": [system(rng), user(sentence(rng, ENGLISH, 6, 40))]}


def multi_part(rng: random.Random) -> dict[str, Any]:
    makers = list(TEXTS.values())
    parts = [{"type": "text", "text": rng.choice(makers)(rng)} for _ in range(rng.randint(2, 5))]
    return {"messages": [system(rng), {"role": "user", "content": parts}]}


def named(rng: random.Random) -> dict[str, Any]:
    messages = [system(rng)]
    speakers = [identifier(rng) for _ in range(rng.randint(1, 3))]
    for _ in range(rng.randint(1, 8)):
        role = rng.choice(("user", "assistant"))
        message = {"role": role, "content": short(rng) if rng.random() < 0.6 else sentence(rng, ENGLISH)}
        if role == "user":
            message["name"] = rng.choice(speakers)
        messages.append(message)
    return {"messages": messages}


def mixed(rng: random.Random) -> dict[str, Any]:
    """A typical batch prompt: instructions, a record, and a text in some language to work on."""
    task = rng.choice(("Classify the sentiment of", "Translate into English", "Extract the amounts from", "Summarize"))
    text = rng.choice((german_french, chinese_japanese, arabic, english, emoji))(rng)
    payload = json.dumps(record(rng), ensure_ascii=rng.random() < 0.5)
    return {"messages": [system(rng), user(f"{task} the text below. Customer record: {payload}\n\nText:\n{text}")]}


CATEGORIES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "english prose": single(english),
    "code": single(code),
    "json": single(json_text),
    "numbers": single(numbers),
    "ids and hashes": single(identifiers),
    "german/french": single(german_french),
    "chinese/japanese": single(chinese_japanese),
    "arabic": single(arabic),
    "emoji": single(emoji),
    "short messages": single(short),
    "long messages": long_request,
    "system + user": system_user,
    "multi-part content": multi_part,
    "named messages": named,
    "realistic mix": mixed,
}


def sample(per_category: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The requests of every category, the same for the same seed."""
    requests_by_category = {}
    for index, (category, make) in enumerate(CATEGORIES.items()):
        rng = random.Random(seed * 1000 + index)  # a category's sample does not depend on the others
        requests_by_category[category] = [make(rng) for _ in range(per_category)]
    return requests_by_category


def texts_of(body: dict[str, Any]) -> Iterator[str]:
    """The texts the content rule applies to: each content string and each text part."""
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            yield from (part["text"] for part in content if part.get("type") == "text")


# Exact counts -----------------------------------------------------------------------------------------------------


Count = Callable[[str], int]


def bpe_openai_counts() -> dict[str, Count]:
    try:
        import bpe_openai
    except ImportError:
        raise SystemExit(HOW_TO_RUN) from None
    return {name: _counter(bpe_openai.get_encoding(name)) for name in ENCODINGS}


def _counter(encoding: Any) -> Count:
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def tiktoken_counts() -> dict[str, Count] | None:
    """tiktoken with its own definitions of the encodings, their files taken from bpe-openai's wheel and checked
    against the hashes tiktoken expects; None without tiktoken."""
    try:
        import tiktoken
        from tiktoken_ext import openai_public
    except ImportError:
        return None

    def seeded(url: str, expected_hash: str) -> dict[bytes, int]:
        stem = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
        data = gzip.decompress((resources.files("bpe_openai.data") / f"{stem}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != expected_hash:
            raise SystemExit(f"bpe-openai's {stem} is not the file tiktoken expects")
        pairs = (line.split() for line in data.splitlines() if line)
        return {base64.b64decode(token): int(rank) for token, rank in pairs}

    with mock.patch.object(openai_public, "load_tiktoken_bpe", seeded):  # instead of a download
        return {name: _counter(tiktoken.Encoding(**getattr(openai_public, name)())) for name in ENCODINGS}


def exact_request_tokens(body: dict[str, Any], count: Count) -> int:
    """Prompt tokens by OpenAI's chat framing (gpt-4 and gpt-4o families), the text of parts counted part by part."""
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in body["messages"]:
        total += 3 + count(message["role"])
        total += sum(count(text) for text in texts_of({"messages": [message]}))
        if message.get("name"):
            total += count(message["name"]) + 1
    return total


# Rules measured on the same sample: the one before, the adopted one written plainly, others ---------------------


def by_bytes(bytes_per_token: float) -> Callable[[str], int]:
    return lambda text: math.ceil(len(text.encode("utf-8")) / bytes_per_token)


LOWERCASE = re.compile("[a-z]+")
SPACE_BEFORE_LETTER = re.compile(" (?=[A-Za-z])")


def by_character(lowercase: float) -> Callable[[str], int]:
    """Each ASCII lowercase letter `lowercase` of a token, a space before an ASCII letter nothing (the word's token
    takes it in), any other ASCII character (capitals, digits, punctuation, other spaces) a token, any other
    character 3/4 of a token a UTF-8 byte. Written plainly with str and re (about 50 MB/s); with `lowercase` 1/2 it
    is the rule `shared.tokens.text_tokens` counts with bytes.translate."""

    def tokens(text: str) -> int:
        ascii_characters = len(text.encode("ascii", "ignore"))
        other_bytes = len(text.encode("utf-8")) - ascii_characters
        lower = sum(map(len, LOWERCASE.findall(text)))
        free = len(SPACE_BEFORE_LETTER.findall(text))
        return math.ceil(lowercase * lower + (ascii_characters - lower - free) + 0.75 * other_bytes)

    return tokens


RULES: dict[str, Callable[[str], int]] = {
    "previous: bytes / 3": by_bytes(3),
    "bytes / 2": by_bytes(2),
    "bytes / 1.5": by_bytes(1.5),
    "bytes / 1 (holds for any text)": by_bytes(1),
    "by character, lowercase 1/3": by_character(1 / 3),
    "adopted: by character, lowercase 1/2": text_tokens,
}


def estimate_with(rule: Callable[[str], int], body: dict[str, Any]) -> int:
    """`request_tokens` with another text rule."""
    with mock.patch.object(shared.tokens, "text_tokens", rule):
        return request_tokens(body)


def fastest(rule: Callable[[str], int], texts: list[str], rounds: int = 5) -> float:
    """The fewest seconds `rule` took to count every text, of `rounds` rounds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            rule(text)
        times.append(time.perf_counter() - started)
    return min(times)


# The tables -------------------------------------------------------------------------------------------------------


def percentile(ordered: list[float], share: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(ratios: list[float]) -> list[str]:
    """mean, min, p50, p95, max, and how many are under 1."""
    ordered = sorted(ratios)
    cells = [sum(ordered) / len(ordered), ordered[0], percentile(ordered, 0.5), percentile(ordered, 0.95), ordered[-1]]
    return [f"{value:.2f}" for value in cells] + [str(sum(1 for value in ordered if value < 1))]


def table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table: numbers to the right, words to the left."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [all(row[i].replace(".", "").isdigit() for row in rows) for i in range(len(header))]
    print("| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 1) + (":" if n else "-") for w, n in zip(widths, numeric, strict=True)) + "|")
    for row in rows:
        cells = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    options = parser.parse_args()

    counts = bpe_openai_counts()
    requests_by_category = sample(options.per_category, options.seed)
    every_text = sorted({t for bodies in requests_by_category.values() for body in bodies for t in texts_of(body)})
    checked = tiktoken_counts()
    if checked is None:
        print("(tiktoken is not installed: counts by bpe-openai alone)\n")
    else:
        for name in ENCODINGS:
            differ = sum(1 for text in every_text if counts[name](text) != checked[name](text))
            if differ:
                raise SystemExit(f"bpe-openai and tiktoken disagree on {differ} texts in {name}")
        print(f"bpe-openai and tiktoken (seeded with the same files) agree on all {len(every_text):,} texts.\n")
    written = by_character(1 / 2)
    if any(text_tokens(text) != written(text) for text in every_text):
        raise SystemExit("shared.tokens.text_tokens and the rule written plainly here disagree")
    size = sum(len(text.encode("utf-8")) for text in every_text) / 1e6
    print(
        f"shared.tokens.text_tokens counts all {len(every_text):,} texts ({size:.1f} MB) as the rule written plainly "
        f"here does, at {size / fastest(text_tokens, every_text):.0f} MB/s against "
        f"{size / fastest(written, every_text):.0f} MB/s (the fastest of 5 rounds).\n"
    )

    exact = {
        name: {c: [exact_request_tokens(b, counts[name]) for b in bodies] for c, bodies in requests_by_category.items()}
        for name in ENCODINGS
    }
    total = sum(len(bodies) for bodies in requests_by_category.values())
    print(f"{total:,} requests, seed {options.seed}: request_tokens(body) / exact prompt tokens (OpenAI's framing)\n")
    for name in ENCODINGS:
        rows, everything = [], []
        for category, bodies in requests_by_category.items():
            ratios = [request_tokens(b) / e for b, e in zip(bodies, exact[name][category], strict=True)]
            everything += ratios
            rows.append([category, str(len(bodies)), *summary(ratios)])
        rows.append(["all", str(len(everything)), *summary(everything)])
        table([name, "n", "mean", "min", "p50", "p95", "max", "under 1"], rows)
        print()

    print("The text rule alone: text_tokens(text) / the text's tokens, each content string or text part\n")
    rows = []
    for category, bodies in requests_by_category.items():
        texts = [t for body in bodies for t in texts_of(body)]
        row = [category, str(len(texts))]
        for name in ENCODINGS:
            ratios = sorted(text_tokens(t) / max(1, counts[name](t)) for t in texts)
            row += [f"{ratios[0]:.2f}", f"{percentile(ratios, 0.5):.2f}", str(sum(1 for r in ratios if r < 1))]
        rows.append(row)
    header = ["category", "texts", "o200k min", "p50", "under 1", "cl100k min", "p50", "under 1"]
    table(header, rows)
    print()

    print("Rules on the same requests (the same framing, a name 1 token more): estimate / exact\n")
    rows = []
    for rule_name, rule in RULES.items():
        english_prose, everything, lowest, under = [], [], [], set()
        for name in ENCODINGS:
            ratios = {
                category: [estimate_with(rule, b) / e for b, e in zip(bodies, exact[name][category], strict=True)]
                for category, bodies in requests_by_category.items()
            }
            english_prose.append(sum(ratios["english prose"]) / len(ratios["english prose"]))
            everything.append(sum(sum(v) for v in ratios.values()) / total)
            lowest.append(min(min(v) for v in ratios.values()))
            under |= {category for category, values in ratios.items() if min(values) < 1}
        cells = [f"{value:.2f}" for value in (*english_prose, *everything, *lowest)]
        rows.append([rule_name, *cells, ", ".join(c for c in CATEGORIES if c in under) or "none"])
    header = ["rule", "English o200k", "cl100k", "all o200k", "cl100k", "min o200k", "cl100k", "under 1 in"]
    table(header, rows)


if __name__ == "__main__":
    main()
