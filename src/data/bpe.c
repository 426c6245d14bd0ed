/* bpe.c - the GPT-2 tokenizer's files (encoder.json, vocab.bpe), decoding, lifetime.
 *
 * Tokens are kept as the bytes they stand for, and merges as pairs of token ids in a
 * hash table, so the merge stage never touches strings. This is the reference's string
 * algorithm exactly as long as equal strings are equal ids: every one-byte string and
 * every merge result must be a token, which open() checks (the reference would fail on
 * a missing one at encode time anyway). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "bpe_impl.h"

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes are their own code point, the
 * other 68 bytes become U+0100 + n in byte order. cp_byte inverts it (-1: no byte). */
static void byte_alphabet(int cp_byte[324])
{
    for (int c = 0; c < 324; c++) cp_byte[c] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        cp_byte[printable ? b : 256 + n++] = b;
    }
}

/* Decode a token string (valid UTF-8: jansson checked) into bytes; returns the byte
 * count, or -1 with *bad set to the first code point outside the alphabet. */
static long token_bytes(const char *key, const int cp_byte[324], unsigned char *out, unsigned *bad)
{
    long n = 0;
    for (const unsigned char *s = (const unsigned char *)key; *s;) {
        unsigned c = *s++;
        if (c >= 0x80) {
            int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
            c &= 0x3F >> more;
            while (more--) c = c << 6 | (*s++ & 0x3F);
        }
        if (c >= 324 || cp_byte[c] < 0) {
            *bad = c;
            return -1;
        }
        if (out) out[n] = (unsigned char)cp_byte[c];
        n++;
    }
    return n;
}

static slm_status read_vocab(struct slm_bpe *b, const char *path, json_t *root)
{
    SLM_CHECK(json_is_object(root) && json_object_size(root) > 0 && json_object_size(root) < 1u << 30,
              SLM_ERR_FORMAT, "%s: expected a non-empty JSON object from token strings to ids", path);
    int cp_byte[324];
    byte_alphabet(cp_byte);
    b->n_vocab = (int32_t)json_object_size(root);
    b->tok_off = calloc((size_t)b->n_vocab + 1, sizeof *b->tok_off);
    SLM_CHECK(b->tok_off, SLM_ERR_NOMEM, "%s: cannot allocate %d tokens", path, b->n_vocab);
    const char *key;
    json_t *val;
    size_t total = 0;
    json_object_foreach(root, key, val) {
        SLM_CHECK(json_is_integer(val), SLM_ERR_FORMAT, "%s: the id of token \"%.60s\" is not an integer",
                  path, key);
        json_int_t id = json_integer_value(val);
        SLM_CHECK(id >= 0 && id < b->n_vocab && !b->tok_off[id + 1], SLM_ERR_FORMAT,
                  "%s: token \"%.60s\" has id %lld; the ids of %d tokens must be 0..%d, each once", path, key,
                  (long long)id, b->n_vocab, b->n_vocab - 1);
        unsigned bad = 0;
        long len = token_bytes(key, cp_byte, NULL, &bad);
        SLM_CHECK(len != 0, SLM_ERR_FORMAT, "%s: an empty token (id %lld)", path, (long long)id);
        SLM_CHECK(len > 0, SLM_ERR_FORMAT, "%s: token \"%.60s\" has the character U+%04X, which is not one "
                  "of GPT-2's 256 byte characters", path, key, bad);
        b->tok_off[id + 1] = (uint32_t)len;
        total += (size_t)len;
    }
    for (int32_t i = 0; i < b->n_vocab; i++) b->tok_off[i + 1] += b->tok_off[i];
    b->tok_bytes = malloc(total);
    SLM_CHECK(b->tok_bytes, SLM_ERR_NOMEM, "%s: cannot allocate %zu bytes of tokens", path, total);
    for (int i = 0; i < 256; i++) b->byte_tok[i] = -1;
    json_object_foreach(root, key, val) {
        json_int_t id = json_integer_value(val);
        unsigned bad;
        long len = token_bytes(key, cp_byte, b->tok_bytes + b->tok_off[id], &bad);
        if (len == 1) b->byte_tok[b->tok_bytes[b->tok_off[id]]] = (int32_t)id;
    }
    for (int c = 0; c < 324; c++)
        SLM_CHECK(cp_byte[c] < 0 || b->byte_tok[cp_byte[c]] >= 0, SLM_ERR_FORMAT,
                  "%s: no token for byte 0x%02X (the character U+%04X): every byte needs one",
                  path, cp_byte[c], c);
    return SLM_OK;
}

static slm_status read_file(const char *path, const char *what, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    SLM_CHECK(f, SLM_ERR_IO, "cannot open %s %s: %s", what, path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger) free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return SLM_ERROR(SLM_ERR_NOMEM, "cannot hold %s %s in memory", what, path);
    if (err) {
        free(buf);
        return SLM_ERROR(SLM_ERR_IO, "cannot read %s %s", what, path);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return SLM_OK;
}

static slm_status merge_id(json_t *vocab, const char *vocab_path, const char *path, int line,
                           const char *tok, int32_t *id)
{
    json_t *v = json_object_get(vocab, tok);
    SLM_CHECK(v, SLM_ERR_FORMAT, "%s:%d: the merge's token \"%.60s\" is not in the vocabulary %s",
              path, line, tok, vocab_path);
    *id = (int32_t)json_integer_value(v);
    return SLM_OK;
}

/* One merge per line "a b" after the "#version" line; a, b and ab must be tokens. The
 * text is cut up in place. */
static slm_status parse_merges(struct slm_bpe *b, char *text, const char *path, json_t *vocab,
                               const char *vocab_path)
{
    char *eol = strchr(text, '\n');
    SLM_CHECK(!strncmp(text, "#version", 8), SLM_ERR_FORMAT,
              "%s:1: expected the \"#version\" comment line of a vocab.bpe file, found \"%.40s\"", path, text);
    int32_t rank = 0;
    for (int line = 2; eol && eol[1]; line++, rank++) {
        char *a = eol + 1;
        eol = strchr(a, '\n');
        if (eol) *eol = '\0';
        size_t n = strlen(a);
        if (n && a[n - 1] == '\r') a[--n] = '\0';
        char *sp = strchr(a, ' ');
        SLM_CHECK(sp && sp > a && sp[1] && !strchr(sp + 1, ' ') && !strchr(a, '\t'), SLM_ERR_FORMAT,
                  "%s:%d: expected a merge \"A B\" (two tokens and one space), found \"%.60s\"", path, line, a);
        *sp = '\0';
        char *bb = sp + 1;
        size_t la = (size_t)(sp - a), lb = strlen(bb);
        int32_t ia = 0, ib = 0, im = 0;
        SLM_CALL(merge_id(vocab, vocab_path, path, line, a, &ia));
        SLM_CALL(merge_id(vocab, vocab_path, path, line, bb, &ib));
        memmove(a + la, bb, lb + 1); /* "a\0b" -> "ab" */
        SLM_CALL(merge_id(vocab, vocab_path, path, line, a, &im));
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> b->merge_shift;
        while (b->merges[i].rank >= 0 && b->merges[i].key != key) i = (i + 1) & b->merge_mask;
        SLM_CHECK(b->merges[i].rank < 0, SLM_ERR_FORMAT, "%s:%d: the merge \"%.*s %s\" repeats line %d",
                  path, line, (int)la, a, a + la, b->merges[i].rank + 2);
        b->merges[i] = (slm_bpe_merge){key, rank, im};
    }
    return SLM_OK;
}

static slm_status read_merges(struct slm_bpe *b, const char *path, json_t *vocab, const char *vocab_path)
{
    char *text = NULL;
    size_t len = 0;
    SLM_CALL(read_file(path, "vocab.bpe", &text, &len));
    size_t nul = strlen(text);
    if (nul != len) {
        free(text);
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: a NUL byte at offset %zu; vocab.bpe is a text file", path, nul);
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    int bits = 4;
    while (((size_t)1 << bits) < 2 * lines) bits++;
    b->merge_mask = ((uint64_t)1 << bits) - 1;
    b->merge_shift = 64 - bits;
    b->merges = malloc((b->merge_mask + 1) * sizeof *b->merges);
    if (!b->merges) {
        free(text);
        return SLM_ERROR(SLM_ERR_NOMEM, "%s: cannot allocate the merge table", path);
    }
    for (uint64_t i = 0; i <= b->merge_mask; i++) b->merges[i].rank = -1;
    slm_status s = parse_merges(b, text, path, vocab, vocab_path);
    free(text);
    return s == SLM_OK ? SLM_OK : slm_error_push(s, __FILE__, __LINE__, __func__);
}

static slm_status load(struct slm_bpe *b, const char *encoder_json, const char *vocab_bpe)
{
    char *text = NULL;
    size_t len = 0;
    SLM_CALL(read_file(encoder_json, "encoder.json", &text, &len));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je); /* json_loadf would getc() each byte */
    free(text);
    SLM_CHECK(root, SLM_ERR_FORMAT, "%s:%d:%d: not valid JSON: %s", encoder_json, je.line, je.column, je.text);
    slm_status s = read_vocab(b, encoder_json, root);
    if (s == SLM_OK) s = read_merges(b, vocab_bpe, root, encoder_json);
    json_decref(root);
    if (s == SLM_OK) s = slm_bpe_pretok_init(b);
    return s == SLM_OK ? SLM_OK : slm_error_push(s, __FILE__, __LINE__, __func__);
}

slm_status slm_bpe_open(const char *encoder_json, const char *vocab_bpe, slm_bpe_t *out)
{
    *out = NULL;
    struct slm_bpe *b = calloc(1, sizeof *b);
    SLM_CHECK(b, SLM_ERR_NOMEM, "out of memory");
    slm_status s = load(b, encoder_json, vocab_bpe);
    if (s != SLM_OK) {
        slm_bpe_close(&b);
        return slm_error_push(s, __FILE__, __LINE__, __func__);
    }
    *out = b;
    return SLM_OK;
}

void slm_bpe_close(slm_bpe_t *bpe)
{
    if (!bpe || !*bpe) return;
    struct slm_bpe *b = *bpe;
    slm_bpe_pretok_free(b);
    slm_bpe_merge_free(b);
    free(b->merges);
    free(b->tok_bytes);
    free(b->tok_off);
    free(b);
    *bpe = NULL;
}

slm_status slm_bpe_open_dir(const char *dir, slm_bpe_t *out)
{
    char enc[4096], voc[4096];
    int n1 = snprintf(enc, sizeof enc, "%s/encoder.json", dir), n2 = snprintf(voc, sizeof voc, "%s/vocab.bpe", dir);
    SLM_CHECK(n1 < (int)sizeof enc && n2 < (int)sizeof voc, SLM_ERR_ARG, "tokenizer directory name too long: %s", dir);
    SLM_CALL(slm_bpe_open(enc, voc, out));
    return SLM_OK;
}

int slm_bpe_vocab_size(slm_bpe_t bpe) { return bpe->n_vocab; }

int32_t slm_bpe_token_id(slm_bpe_t b, const char *bytes, size_t len)
{
    for (int32_t t = 0; t < b->n_vocab; t++)
        if (b->tok_off[t + 1] - b->tok_off[t] == len && !memcmp(b->tok_bytes + b->tok_off[t], bytes, len)) return t;
    return -1;
}

size_t slm_bpe_decode(slm_bpe_t b, const int32_t *tok, size_t n, char *out, size_t cap)
{
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = tok[i];
        if (t < 0 || t >= b->n_vocab) {
            (void)SLM_ERROR(SLM_ERR_ARG, "token %zu is %d, not an id of this vocabulary (0..%d)", i, t,
                            b->n_vocab - 1);
            return (size_t)-1;
        }
        size_t len = b->tok_off[t + 1] - b->tok_off[t];
        if (used < cap) memcpy(out + used, b->tok_bytes + b->tok_off[t], len < cap - used ? len : cap - used);
        used += len;
    }
    return used;
}
