/*
 * test_badge.c - the status badge's picture (api/badge.c, tf_badge_svg):
 * its text for screen readers, its colours per status, its width growing
 * with the label, and the cap on the caller's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "tf_err.h"
#include "tf_test.h"

/* The value of attribute name="..." of the first element holding it. */
static int attr_int(const char *svg, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "%s=\"", name);
    const char *p = strstr(svg, key);
    return p ? atoi(p + strlen(key)) : -1;
}

TF_TEST(says_its_text_for_screen_readers)
{
    char svg[2048];
    int n = tf_badge_svg("linux_rel", "failing", svg, sizeof(svg));
    TF_CHECK(n > 0 && (size_t)n == strlen(svg));
    TF_CHECK(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) == 0);
    TF_CHECK(strstr(svg, "role=\"img\"") != NULL);
    TF_CHECK(strstr(svg, "aria-label=\"linux_rel: failing\"") != NULL);
    TF_CHECK(strstr(svg, "<title>linux_rel: failing</title>") != NULL);
    TF_CHECK(strstr(svg, ">linux_rel</text>") != NULL);
    TF_CHECK(strstr(svg, ">failing</text>") != NULL);
    TF_CHECK(strcmp(svg + n - 7, "</svg>\n") == 0);
}

TF_TEST(one_colour_per_status)
{
    static const struct {
        const char *status, *colour;
    } want[] = {{"passing", "#2e7d32"}, {"failing", "#c62828"},
                {"building", "#1565c0"}, {"unknown", "#5f6368"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char svg[2048];
        TF_CHECK(tf_badge_svg("b", want[i].status, svg, sizeof(svg)) > 0);
        TF_CHECK(strstr(svg, want[i].colour) != NULL);
        /* No other status's colour. */
        for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
            if (k != i)
                TF_CHECK(strstr(svg, want[k].colour) == NULL);
    }
}

TF_TEST(wider_for_a_longer_label)
{
    char a[2048], b[2048];
    TF_CHECK(tf_badge_svg("x", "passing", a, sizeof(a)) > 0);
    TF_CHECK(tf_badge_svg("a-much-longer-builder-name", "passing", b,
                          sizeof(b)) > 0);
    TF_CHECK(attr_int(a, "width") > 40);
    TF_CHECK(attr_int(b, "width") > attr_int(a, "width") + 100);
}

TF_TEST(a_small_buffer_is_an_error)
{
    char svg[64];
    TF_CHECK_INT(tf_badge_svg("linux", "passing", svg, sizeof(svg)),
                 TF_E2BIG);
}

TF_TEST_MAIN()
