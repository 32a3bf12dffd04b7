"""
One small tokenizer layer shared by data/*/prepare.py, sample.py and eval.py.
A dataset's meta.json says which tokenizer its .bin files use:
- 'char':    one id per character, vocabulary = meta['chars'] (sorted)
- 'gpt2':    OpenAI's GPT-2 BPE through tiktoken (eot 50256)
- 'llama2c': a llama2.c tokenizer.bin (sentencepiece BPE export, e.g. stories260K's tok512.bin), read here
             in pure python so the tokenizer needs no sentencepiece install
- 'bpe':     a byte-level BPE trained on the dataset itself (train_bpe), as a Hugging Face tokenizer.json; meta.json
             names the file ('path'), load_meta puts its text into meta['tokenizer_json'] so that checkpoints,
             which store the meta dict, carry the tokenizer itself and need no data dir
get_tokenizer(meta) returns an object with .encode(str) -> list[int], .decode(list[int]) -> str,
.vocab_size, .eot and .bos (int or None). encode() never adds special tokens; prepare scripts add them.
"""
import json
import os
import struct
from types import SimpleNamespace

BPE_EOT = '<|endoftext|>'  # the one special token of train_bpe's tokenizers, appended after every document


def load_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no meta.json in {data_dir} (run the dataset's prepare.py first)")
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    check_meta(meta, path)
    if meta.get('path') and not os.path.isabs(meta['path']):  # tokenizer file given relative to the data dir
        meta['path'] = os.path.join(data_dir, meta['path'])
    if meta.get('tokenizer') == 'bpe' and 'tokenizer_json' not in meta:
        path = meta.pop('path', None) or ''
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the tokenizer file {path or 'tokenizer.json'} named in {data_dir}/meta.json is missing")
        with open(path, encoding='utf-8') as f:
            meta['tokenizer_json'] = f.read()
    return meta


def check_meta(meta, where):
    """The validation of a tokenizer meta dict (a data dir's meta.json, or the copy a checkpoint carries):
    ValueError naming `where` and the key that is wrong."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where} must hold a JSON object (tokenizer, vocab_size, dtype, ...), got a {type(meta).__name__}")
    vocab, kind, dtype = meta.get('vocab_size'), meta.get('tokenizer'), meta.get('dtype', 'uint16')
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        raise ValueError(f"{where}: vocab_size must be a positive integer, got {vocab!r}")
    if not isinstance(kind, str):
        raise ValueError(f"{where}: 'tokenizer' must name how the .bin files were encoded (e.g. 'char', 'gpt2'), got {kind!r}")
    if dtype not in ('uint16', 'uint32'):
        raise ValueError(f"{where}: dtype must be 'uint16' or 'uint32', got {dtype!r}")
    if kind == 'char' and (not isinstance(meta.get('chars'), (list, str)) or len(meta['chars']) != vocab):
        raise ValueError(f"{where}: a 'char' tokenizer needs 'chars', the vocab_size={vocab} characters in id order")


def check_same_tokenizer(where, meta, theirs):
    """Data described by `meta` (read from `where`) must be encoded as a checkpoint's model expects (its tokenizer
    meta `theirs`): the same tokenizer and the same vocabulary, or every id means another token."""
    if meta['tokenizer'] != theirs.get('tokenizer'):
        raise ValueError(f"{where} uses the {meta['tokenizer']!r} tokenizer, the checkpoint {theirs.get('tokenizer')!r}")
    if meta.get('tokenizer_json') != theirs.get('tokenizer_json'):
        raise ValueError(f"{where} and the checkpoint use different trained {meta['tokenizer']!r} vocabularies: "
                         "ids would mean other tokens")
    if meta.get('chars') != theirs.get('chars') or meta['vocab_size'] != theirs.get('vocab_size'):
        only = sorted(set(meta.get('chars') or ()) - set(theirs.get('chars') or ()))
        raise ValueError(f"{where} and the checkpoint both use the {meta['tokenizer']!r} tokenizer but with different "
                         f"vocabularies (data {meta['vocab_size']} tokens, checkpoint {theirs.get('vocab_size')}"
                         + (f"; only in the data: {''.join(only[:20])!r}" if only else "") + "): ids would mean other tokens")


def train_bpe(texts, vocab_size, length=None, progress=False):
    """
    Train a byte-level BPE (GPT-2's byte alphabet and pre-tokenizer; Language Models are Unsupervised Multitask
    Learners, 2019) on an iterable of str with Hugging Face tokenizers -> tokenizer.json text. vocab_size counts the
    256 bytes, the merges and one special token, BPE_EOT (id 0). No normalizer, so every text round-trips exactly.
    Deterministic: the same texts give the same file (ties between equally frequent pairs are broken by id).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if not 258 <= vocab_size <= 2 ** 16:  # at least one merge; ids fit the uint16 .bin files
        raise ValueError(f"vocab_size must be between 258 (256 bytes, {BPE_EOT}, one merge) and 65536, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_EOT], show_progress=progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes, seen or not
    tok.train_from_iterator(texts, trainer, length=length)
    return tok.to_str()


def get_tokenizer(meta):
    kind = meta.get('tokenizer')
    if kind == 'char':
        chars = meta['chars']
        stoi = {c: i for i, c in enumerate(chars)}
        def encode(s):
            bad = set(s) - stoi.keys()
            if bad:
                raise ValueError(f"characters not in this dataset's vocabulary: {''.join(sorted(bad))!r}")
            return [stoi[c] for c in s]
        return SimpleNamespace(encode=encode, decode=lambda ids: ''.join(chars[i] for i in ids),
                               vocab_size=len(chars), eot=None, bos=None)
    if kind == 'gpt2':
        import tiktoken
        try:
            enc = tiktoken.get_encoding('gpt2')
        except Exception as e:  # offline without a cache: tiktoken tries to download and fails
            raise FileNotFoundError("cannot load the GPT-2 BPE offline: set TIKTOKEN_CACHE_DIR to a folder with the "
                                    "cached GPT-2 BPE files, e.g. ../shared/tokenizers/tiktoken_cache") from e
        # encode_ordinary: text is always text, a literal '<|endoftext|>' in the data is not the EOT token
        return SimpleNamespace(encode=enc.encode_ordinary, decode=enc.decode,
                               vocab_size=enc.n_vocab, eot=enc.eot_token, bos=None)
    if kind == 'llama2c':
        if not meta.get('path'):
            raise ValueError("llama2c meta needs 'path', the llama2.c tokenizer.bin file")
        return Llama2cTokenizer(meta['path'])
    if kind == 'bpe':
        from tokenizers import Tokenizer
        if not meta.get('tokenizer_json'):
            raise ValueError("bpe meta needs 'tokenizer_json', the text of a tokenizer.json (load_meta reads it)")
        try:
            tok = Tokenizer.from_str(meta['tokenizer_json'])
        except Exception as e:  # tokenizers raises its own Exception type for malformed files
            raise ValueError(f"bpe meta: not a valid tokenizer.json: {e}") from None
        tok.encode_special_tokens = True  # as gpt2's encode_ordinary: a literal '<|endoftext|>' in text stays text
        return SimpleNamespace(encode=lambda s: tok.encode(s, add_special_tokens=False).ids,
                               decode=lambda ids: tok.decode(ids, skip_special_tokens=False),
                               vocab_size=tok.get_vocab_size(), bos=meta.get('bos'),
                               eot=meta['eot'] if meta.get('eot') is not None else tok.token_to_id(BPE_EOT))
    raise ValueError(f"unknown tokenizer {kind!r} in meta (expected 'char', 'gpt2', 'llama2c' or 'bpe')")


class Llama2cTokenizer:
    """
    llama2.c's tokenizer.bin: int32 max_token_length, then per piece float32 score, int32 length, bytes.
    Piece 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), then byte-fallback pieces <0x00>..<0xFF>, then the BPE pieces
    (sentencepiece's '▁' is stored as a plain space). Encoding is sentencepiece BPE as in llama2.c's run.c:
    prepend a space, start from single characters, repeatedly merge the adjacent pair whose merged piece has
    the highest score (leftmost on ties); characters outside the vocabulary become their UTF-8 byte pieces.

    Speed: run.c's loop costs O(n^2) on the whole text. Instead we cut the text where no merge can ever
    cross: between characters a, b when no multi-character piece has b at a non-first position or no piece
    has a at a non-last position (a character outside the vocabulary is cut on both sides). Merges inside
    one segment never depend on other segments, so encoding segment by segment gives exactly run.c's ids.
    For sentencepiece vocabs (pieces are '▁word' or 'word') every space is a cut, so segments are single
    words; we BPE each distinct word once and cache it. Pieces with inner spaces would just make longer
    segments (slower, still exact). This is computed from the vocab, not assumed.
    """

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"llama2c tokenizer file not found: {path}")
        with open(path, 'rb') as f:
            data = f.read()
        self.pieces, self.scores = [], []
        try:
            offset = 4  # skip max_token_length
            while offset < len(data):
                score, n = struct.unpack_from('<fi', data, offset)
                if not 0 <= n <= len(data) - offset - 8:
                    raise ValueError
                self.pieces.append(data[offset + 8:offset + 8 + n])
                self.scores.append(score)
                offset += 8 + n
            byte_ids = [self.pieces.index(f'<0x{b:02X}>'.encode()) for b in range(256)]
        except (struct.error, ValueError):
            raise ValueError(f"{path} is not a llama2.c tokenizer.bin file") from None
        self.path, self.vocab_size = path, len(self.pieces)
        self.bos, self.eot, self.unk = 1, 2, 0  # llama2.c's fixed ids: <s>, </s>, <unk>
        self.byte_ids, self.byte_of = byte_ids, {i: b for b, i in enumerate(byte_ids)}
        # the pieces BPE may produce: everything except the 3 control pieces and the byte pieces
        self.ids = {self.pieces[i].decode('utf-8'): i for i in range(3, self.vocab_size) if i not in self.byte_of}
        multi = [p for p in self.ids if len(p) > 1]
        self.continues = set(c for p in multi for c in p[1:])  # chars that can follow inside a piece
        self.extends = set(c for p in multi for c in p[:-1])   # chars that can be followed inside a piece
        self.cache = {}

    def encode(self, text):
        if not text:
            return []
        text = ' ' + text  # sentencepiece's dummy prefix: the first word looks like every other word
        ids, start = [], 0
        for j in range(1, len(text)):
            if text[j] not in self.continues or text[j - 1] not in self.extends:
                ids += self._bpe(text[start:j])
                start = j
        return ids + self._bpe(text[start:])

    def _bpe(self, segment):
        if segment in self.cache:
            return self.cache[segment]
        syms = list(segment)
        while len(syms) > 1:  # merge the best-scoring adjacent pair until no pair is a piece
            best, best_i = None, None
            for i in range(len(syms) - 1):
                j = self.ids.get(syms[i] + syms[i + 1])
                if j is not None and (best is None or self.scores[j] > best):
                    best, best_i = self.scores[j], i
            if best_i is None:
                break
            syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]
        ids = []
        for s in syms:  # a symbol still not in the vocab is a lone unknown char: byte fallback
            ids += [self.ids[s]] if s in self.ids else [self.byte_ids[b] for b in s.encode('utf-8')]
        if len(self.cache) < 1_000_000:  # bound memory on huge corpora
            self.cache[segment] = ids
        return ids

    def decode(self, ids):
        # like sentencepiece: drop the dummy-prefix space at the start and after each BOS, so
        # decode(encode(s)) == s; byte pieces are raw bytes, joined before utf-8 decoding so characters
        # split over several byte pieces come back whole; control pieces print as stored ('\n<s>\n')
        out, prev = bytearray(), self.bos
        for i in ids:
            piece = bytes([self.byte_of[i]]) if i in self.byte_of else self.pieces[i]
            if prev == self.bos and piece.startswith(b' ') and i not in self.byte_of:
                piece = piece[1:]
            out += piece
            prev = i
        return out.decode('utf-8', errors='replace')
