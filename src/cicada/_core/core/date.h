/* The cached value of the `Date` response header (IMF-fixdate, RFC 9110 5.6.7). Formatting a
 * date per response is wasted work: the value is rebuilt at most once per second. Plain C. */
#ifndef CC_DATE_H
#define CC_DATE_H

#include <stddef.h>

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define CC_DATE_LEN 29

/* The current date; the pointer stays valid until the next call. Never fails. */
const char *cc_date_now(void);

#endif
