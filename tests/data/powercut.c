/* A power cut for one directory, by LD_PRELOAD (tests/integration/test_power_cut.py).
 *
 * After every fsync(2)/fdatasync(2) that succeeds on a file under $POWERCUT_DIR, the file's whole
 * content is copied to "<file>.synced" (written to a temporary name, then renamed: a SIGKILL mid-copy
 * leaves the previous copy). fsync(2) promises exactly that much: the data written to the file before
 * the call is on stable storage once it returns, and nothing about writes after it. A test that kills
 * the process and then puts every "<file>.synced" in place of its file (and deletes files never
 * synced) sees what a power cut at that instant may leave at worst: every write not yet synced lost.
 *
 * What it does not model: torn sectors inside a synced write, a disk that lies about flushes, and
 * directory entries: the test keeps them as they are at the cut (a file deleted stays deleted). SQLite
 * syncs the directory after it creates a WAL or journal, and on ext4 that sync (like any fsync) also
 * commits earlier unlinks and renames to the journal.
 * The copy is made while the calling thread is still inside fsync, so that thread's later writes are
 * not in it; the store is written by one thread only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void keep_synced_copy(int fd) {
    const char *dir = getenv("POWERCUT_DIR");
    char link[64], path[PATH_MAX], tmp[PATH_MAX + 16], done[PATH_MAX + 16], buf[1 << 16];
    struct stat st;
    size_t len;
    if (dir == NULL || (len = strlen(dir)) == 0) return;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;  /* a directory sync: see above */
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = '\0';
    if (strncmp(path, dir, len) != 0 || path[len] != '/' || strstr(path, ".synced") != NULL) return;
    snprintf(tmp, sizeof tmp, "%s.synced.tmp", path);
    snprintf(done, sizeof done, "%s.synced", path);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) abort();  /* a copy we cannot make would make the test pass for nothing */
    off_t at = 0;
    ssize_t got;
    while ((got = pread(fd, buf, sizeof buf, at)) > 0) {
        if (write(out, buf, (size_t)got) != got) abort();
        at += got;
    }
    if (got < 0 || close(out) != 0 || rename(tmp, done) != 0) abort();
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    if (rc == 0) keep_synced_copy(fd);
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    if (rc == 0) keep_synced_copy(fd);
    return rc;
}
