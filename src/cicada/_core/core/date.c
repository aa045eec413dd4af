/* Once-a-second cache of the IMF-fixdate string for the Date header. It formats by hand because
 * strftime depends on the locale; it must never allocate. */
#include "core/date.h"

#include <string.h>
#include <time.h>

static char cc_date_buf[CC_DATE_LEN + 1];
static time_t cc_date_sec = (time_t)-1;

static void put2(char *p, int v) {
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

const char *cc_date_now(void) {
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    time_t now = time(NULL);
    if (now == cc_date_sec)
        return cc_date_buf;
    struct tm tm;
    gmtime_r(&now, &tm);
    char *p = cc_date_buf;
    p[0] = days[tm.tm_wday * 3];
    p[1] = days[tm.tm_wday * 3 + 1];
    p[2] = days[tm.tm_wday * 3 + 2];
    p[3] = ',';
    p[4] = ' ';
    put2(p + 5, tm.tm_mday);
    p[7] = ' ';
    p[8] = months[tm.tm_mon * 3];
    p[9] = months[tm.tm_mon * 3 + 1];
    p[10] = months[tm.tm_mon * 3 + 2];
    p[11] = ' ';
    int y = tm.tm_year + 1900;
    put2(p + 12, (y / 100) % 100);
    put2(p + 14, y % 100);
    p[16] = ' ';
    put2(p + 17, tm.tm_hour);
    p[19] = ':';
    put2(p + 20, tm.tm_min);
    p[22] = ':';
    put2(p + 23, tm.tm_sec);
    memcpy(p + 25, " GMT", 4);
    p[CC_DATE_LEN] = '\0';
    cc_date_sec = now;
    return cc_date_buf;
}
