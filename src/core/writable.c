/* writable.c - start-up checks of the paths a run writes to (shardlm/writable.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shardlm/writable.h"

int slm_mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    struct stat sb;
    if (stat(buf, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

slm_status slm_check_writable_file(const char *key, const char *path)
{
    struct stat sb;
    const int existed = stat(path, &sb) == 0;
    SLM_CHECK(!existed || !S_ISDIR(sb.st_mode), SLM_ERR_IO, "%s: %s is a directory, not a file", key, path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666); /* no O_TRUNC: the check changes nothing */
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "%s: cannot write %s: %s", key, path, strerror(errno));
    close(fd);
    if (!existed) unlink(path);
    return SLM_OK;
}

slm_status slm_check_writable_dir(const char *key, const char *path, int rank)
{
    SLM_CHECK(slm_mkdir_p(path) == 0, SLM_ERR_IO, "%s: cannot create the directory %s: %s", key, path,
              strerror(errno));
    char probe[PATH_MAX];
    SLM_CHECK(snprintf(probe, sizeof probe, "%s/.shardlm-write-test.%d", path, rank) < (int)sizeof probe, SLM_ERR_IO,
              "%s: the path %s is too long", key, path);
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) { /* left by a crash: try once more */
        unlink(probe);
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "%s: cannot write into the directory %s: %s", key, path, strerror(errno));
    close(fd);
    unlink(probe);
    return SLM_OK;
}
