/* rand: a forked child never hands out the bytes its parent will hand out
 * (the pool is emptied in the child by a fork handler, not by a pid check
 * per call), and rand_uniform stays in range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/rand.h"

static void test_fork_child_differs(void **state)
{
    (void)state;
    uint8_t warm[8], mine[64], theirs[64];
    int fds[2];

    rand_bytes(warm, sizeof(warm)); /* the parent's pool is full now */
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t b[64];
        rand_bytes(b, sizeof(b));
        _exit(write(fds[1], b, sizeof(b)) == (ssize_t)sizeof(b) ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], theirs, sizeof(theirs)), (ssize_t)sizeof(theirs));
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rand_bytes(mine, sizeof(mine));
    assert_memory_not_equal(mine, theirs, sizeof(mine));
}

static void test_uniform_range(void **state)
{
    (void)state;
    assert_int_equal(rand_uniform(0), 0);
    assert_int_equal(rand_uniform(1), 0);
    for (int i = 0; i < 10000; i++)
        assert_true(rand_uniform(7) < 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_child_differs),
        cmocka_unit_test(test_uniform_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
