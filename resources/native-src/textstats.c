/*
 * textstats: a tiny native helper library bundled with the desktop shell.
 *
 * It stands for the platform-specific binaries a real runtime ships (a pty
 * helper, a database driver, a codec...): the shell copies the built library
 * into every staged runtime version, and the runtime loads it with ctypes.
 *
 * All functions take NUL-terminated UTF-8 text. A NULL pointer yields -1.
 * Words are maximal runs of non-whitespace bytes, where whitespace is ASCII
 * space, tab, newline, carriage return, vertical tab and form feed; bytes of
 * multi-byte UTF-8 sequences always belong to words.
 */

#include <stddef.h>

#if defined(_WIN32)
#define TEXTSTATS_API __declspec(dllexport)
#else
#define TEXTSTATS_API __attribute__((visibility("default")))
#endif

/* major * 10000 + minor * 100 + patch */
#define TEXTSTATS_VERSION 10000

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

TEXTSTATS_API int textstats_version(void)
{
    return TEXTSTATS_VERSION;
}

TEXTSTATS_API long textstats_count_words(const char *utf8)
{
    const unsigned char *p = (const unsigned char *)utf8;
    long words = 0;
    int in_word = 0;

    if (p == NULL)
        return -1;
    for (; *p != '\0'; ++p) {
        if (is_space(*p)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            ++words;
        }
    }
    return words;
}

/* Lines as an editor shows them: "" has 0, "a" 1, "a\n" 1, "a\nb" 2. */
TEXTSTATS_API long textstats_count_lines(const char *utf8)
{
    const unsigned char *p = (const unsigned char *)utf8;
    long lines = 0;
    unsigned char last = '\n';

    if (p == NULL)
        return -1;
    for (; *p != '\0'; ++p) {
        if (*p == '\n')
            ++lines;
        last = *p;
    }
    if (last != '\n')
        ++lines;
    return lines;
}

/* Unicode code points: every byte that is not a UTF-8 continuation byte. */
TEXTSTATS_API long textstats_count_chars(const char *utf8)
{
    const unsigned char *p = (const unsigned char *)utf8;
    long chars = 0;

    if (p == NULL)
        return -1;
    for (; *p != '\0'; ++p) {
        if ((*p & 0xC0) != 0x80)
            ++chars;
    }
    return chars;
}
