/* fuzz_bpe.c - the GPT-2 vocabulary loaders on any encoder.json and vocab.bpe (the input
 * split in two); when they load, encoding and decoding the input itself must round-trip.
 * A bad pair must be an error, never a crash. */
#include "fuzz_common.h"
#include "shardlm/bpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *json, *merges;
    size_t nj, nm;
    fuzz_split(data, size, &json, &nj, &merges, &nm);
    const char *enc = fuzz_file(0, "encoder.json", json, nj);
    const char *voc = fuzz_file(1, "vocab.bpe", merges, nm);
    slm_bpe_t bpe = NULL;
    if (slm_bpe_open(enc, voc, &bpe) != SLM_OK) return 0;
    int32_t *tok = malloc((size + 1) * sizeof *tok);
    char *back = malloc(size + 1);
    if (tok && back) {
        long n = slm_bpe_encode(bpe, (const char *)data, size, tok, size + 1);
        if (n >= 0) { /* a vocabulary without every byte cannot encode everything */
            size_t len = slm_bpe_decode(bpe, tok, (size_t)n, back, size + 1);
            if (len != size || memcmp(back, data, size)) abort(); /* decode(encode(x)) must be x */
        }
    }
    free(tok);
    free(back);
    slm_bpe_close(&bpe);
    return 0;
}
