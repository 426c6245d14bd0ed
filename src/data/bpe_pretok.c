/* bpe_pretok.c - GPT-2 pre-tokenization: runs of valid UTF-8 are cut by GPT-2's pattern
 * (PCRE2, compiled once, JIT when available); each run of invalid bytes is one pre-token.
 *
 * The pattern's \s is written out as JavaScript's whitespace set (WhiteSpace and
 * LineTerminator of ECMA-262: the Zs category plus \t \n \v \f \r U+2028 U+2029 U+FEFF),
 * because the oracle, the gpt-3-encoder npm package, runs the pattern in JavaScript.
 * PCRE2's own \s differs: it adds U+0085 (NEL) and U+180E and lacks U+FEFF. */
#include "bpe_impl.h"

#define WS "\\t\\n\\x{0B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ with \s = [WS].
 * Anchored: every character starts some alternative, so each match begins where the
 * previous one ended, and a failure to match is a bug, not a skipped character. */
static const char pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+"
                              "|[" WS "]+(?![^" WS "])|[" WS "]+";

slm_status slm_bpe_pretok_init(struct slm_bpe *b)
{
    int err;
    PCRE2_SIZE at;
    b->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
                          &err, &at, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return SLM_ERROR(SLM_ERR_INTERNAL, "the GPT-2 pattern does not compile at offset %zu: %s", (size_t)at,
                         (const char *)msg);
    }
    uint32_t have_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &have_jit);
    b->jit = have_jit && pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE) == 0;
    b->md = pcre2_match_data_create_from_pattern(b->re, NULL);
    SLM_CHECK(b->md, SLM_ERR_NOMEM, "out of memory");
    return SLM_OK;
}

void slm_bpe_pretok_free(struct slm_bpe *b)
{
    pcre2_match_data_free(b->md);
    pcre2_code_free(b->re);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if none starts there. Valid is
 * what PCRE2 accepts: shortest form, no surrogates, at most U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    size_t len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] >= 0x90))
        return 0;
    return len;
}

static slm_status match_run(struct slm_bpe *b, const unsigned char *s, size_t n, size_t base,
                            slm_bpe_piece_fn fn, void *ctx)
{
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(b->md);
    for (size_t at = 0; at < n;) {
        /* the run is valid UTF-8 (checked by the caller), so PCRE2 need not check it again */
        int rc = b->jit ? pcre2_jit_match(b->re, s, n, at, 0, b->md, NULL)
                        : pcre2_match(b->re, s, n, at, PCRE2_NO_UTF_CHECK, b->md, NULL);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return SLM_ERROR(SLM_ERR_INTERNAL, "pre-tokenizer: no match at byte %zu: %s", base + at,
                             (const char *)msg);
        }
        SLM_CHECK(ov[0] == at && ov[1] > at, SLM_ERR_INTERNAL, "pre-tokenizer: empty match at byte %zu", base + at);
        SLM_CALL(fn(ctx, s + at, ov[1] - at));
        at = ov[1];
    }
    return SLM_OK;
}

slm_status slm_bpe_pretokenize(struct slm_bpe *b, const unsigned char *s, size_t n, slm_bpe_piece_fn fn,
                               void *ctx)
{
    for (size_t i = 0; i < n;) {
        size_t j = i, k;
        while (j < n && (k = s[j] < 0x80 ? 1 : utf8_len(s + j, n - j)) > 0) j += k;
        if (j > i) {
            SLM_CALL(match_run(b, s + i, j - i, i, fn, ctx));
        } else {
            while (j < n && utf8_len(s + j, n - j) == 0) j++;
            SLM_CALL(fn(ctx, s + i, j - i));
        }
        i = j;
    }
    return SLM_OK;
}
