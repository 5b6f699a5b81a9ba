/*
 * test_config_check.c - unit tests of core/config_check.c: the -t file checks (files present,
 * missing, unreadable, a FIFO, a directory as a file, the spool directory and its defaults),
 * on whole config files written to a temporary directory.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "tests/unit/check.h"
#include "tests/unit/config_test_util.h"

static void test_check_files(void)
{
    struct rr_config cfg;
    char *errs = NULL, text[8192], line[2048];
    size_t size;
    int problems;

    static const char *const names[] = {
        "cert.pem", "key.pem", "users", "domains", "logins", "notice.txt", "hosts", "auth.sock",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        write_file(path_in(names[i]), "x\n");
    mkdir(path_in("spool-exists"), 0700);
    write_file(path_in("spool-file"), "");

    snprintf(text, sizeof(text),
             "[tls]\ncert = %s\n", path_in("cert.pem"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "key = %s\n", path_in("key.pem"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "[auth]\npasswd_file = %s\n",
             path_in("users"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text),
             "[policy]\nhosted_domains = %s\n", path_in("domains"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "sender_logins = %s\n",
             path_in("logins"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "notify_template = %s\n",
             path_in("notice.txt"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "host_registry = %s\n",
             path_in("hosts"));
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "[server]\nspool_dir = %s\n",
             path_in("spool-new/"));

    /* everything present; the spool does not exist yet but can be created */
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 0, "files: %s", errs);
    free(errs);
    FILE *e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 0, "check present: %d\n%s", problems, errs);
    free(errs);
    config_free(&cfg);

    /* an existing spool, a dovecot socket that exists */
    char *ov_ok[] = { NULL, NULL };
    char o1[1024], o2[1024];
    snprintf(o1, sizeof(o1), "server.spool_dir=%s", path_in("spool-exists"));
    snprintf(o2, sizeof(o2), "auth.dovecot_socket=%s", path_in("auth.sock"));
    ov_ok[0] = o1;
    ov_ok[1] = o2;
    problems = load_text(&cfg, "", ov_ok, 2, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems += config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 0, "check spool exists: %s", errs);
    free(errs);
    config_free(&cfg);

    /* a spool several levels below the nearest existing directory: main.c does mkdir -p */
    snprintf(o1, sizeof(o1), "server.spool_dir=%s", path_in("no/such/parents/spool//"));
    char *ov_deep[] = { o1 };
    problems = load_text(&cfg, "", ov_deep, 1, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems += config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 0, "deep spool: %s", errs);
    free(errs);
    config_free(&cfg);

    /* everything missing: one line per key, at that key's line */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(path_in(names[i]));
    problems = load_text(&cfg, text, NULL, 0, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    static const struct { unsigned line; const char *key, *file; } missing[] = {
        { 2, "cert", "cert.pem" }, { 3, "key", "key.pem" }, { 5, "passwd_file", "users" },
        { 7, "hosted_domains", "domains" }, { 8, "sender_logins", "logins" },
        { 9, "notify_template", "notice.txt" }, { 10, "host_registry", "hosts" },
    };
    CHECK(problems == 7, "check missing: %d\n%s", problems, errs);
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        snprintf(line, sizeof(line), "%s:%u: %s: cannot read %s: No such file or directory",
                 conf_path, missing[i].line, missing[i].key, path_in(missing[i].file));
        CHECK(has_line(errs, line), "missing '%s' in:\n%s", line, errs);
    }
    free(errs);
    config_free(&cfg);

    /* the dovecot socket missing is fine (Dovecot may start later); a directory as a file,
     * spool problems, all from -o */
    char o3[1024], o4[1024], o5[1024];
    snprintf(o3, sizeof(o3), "auth.dovecot_socket=%s", path_in("auth.sock"));
    snprintf(o4, sizeof(o4), "tls.cert=%s", tmpdir);
    snprintf(o5, sizeof(o5), "server.spool_dir=%s", path_in("spool-file/a/spool"));
    char *ov_bad[] = { o3, o4, o5 };
    problems = load_text(&cfg, "", ov_bad, 3, &errs);
    CHECK(problems == 0, "bad -o load: %s", errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 2 && !strstr(errs, "dovecot_socket"), "check -o: %d\n%s", problems,
          errs);
    snprintf(line, sizeof(line), "-o:2: cert: cannot read %s: Is a directory", tmpdir);
    CHECK(has_line(errs, line), "missing '%s' in:\n%s", line, errs);
    snprintf(line, sizeof(line), "-o:3: spool_dir: %s cannot be created: %s is not a "
             "directory", path_in("spool-file/a/spool"), path_in("spool-file"));
    CHECK(has_line(errs, line), "missing '%s' in:\n%s", line, errs);
    free(errs);
    config_free(&cfg);

    /* a FIFO is refused without being opened (opening it would block) */
    mkfifo(path_in("fifo"), 0600);
    snprintf(text, sizeof(text), "[policy]\nhost_registry = %s\n", path_in("fifo"));
    problems = load_text(&cfg, text, NULL, 0, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    snprintf(line, sizeof(line), "%s:2: host_registry: cannot read %s: not a regular file",
             conf_path, path_in("fifo"));
    CHECK(problems == 1 && has_line(errs, line), "fifo: %s", errs);
    free(errs);
    config_free(&cfg);

    /* a spool that is a file */
    snprintf(text, sizeof(text), "# spool\n[server]\nspool_dir = %s\n", path_in("spool-file"));
    problems = load_text(&cfg, text, NULL, 0, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    snprintf(line, sizeof(line), "%s:3: spool_dir: %s is not a directory", conf_path,
             path_in("spool-file"));
    CHECK(problems == 1 && has_line(errs, line), "spool file: %s", errs);
    free(errs);
    config_free(&cfg);

    /* the defaults: "./spool" relative to the working directory, reported as (default):0 */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL, "getcwd");
    CHECK(chdir(tmpdir) == 0, "chdir");
    e = open_memstream(&errs, &size);
    problems = config_load(&cfg, NULL, NULL, 0, e);
    problems += config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 0, "defaults in tmpdir: %s", errs);
    free(errs);
    config_free(&cfg);
    write_file(path_in("spool"), "");
    e = open_memstream(&errs, &size);
    problems = config_load(&cfg, NULL, NULL, 0, e);
    problems += config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 1 && has_line(errs, "(default):0: spool_dir: ./spool is not a directory"),
          "default spool: %s", errs);
    free(errs);
    config_free(&cfg);
    unlink(path_in("spool"));
    CHECK(chdir(cwd) == 0, "chdir back");
}

/* test_check_interfaces - an interface named by a source address must exist (lo always
 * does; the other name is longer than any this machine gives itself); each reported once. */
static void test_check_interfaces(void)
{
    struct rr_config cfg;
    char *errs = NULL, line[2048];
    size_t size;
    int problems;

    problems = load_text(&cfg, "[relay]\nsource_addresses = 127.0.0.1%lo, [::1]%lo\n",
                         NULL, 0, &errs);
    CHECK(problems == 0, "load: %s", errs);
    free(errs);
    FILE *e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    CHECK(problems == 0, "lo exists: %d\n%s", problems, errs);
    free(errs);
    config_free(&cfg);

    problems = load_text(&cfg, "[relay]\n\nsource_addresses = 192.0.2.1%rr-no-such0, "
                         "2001:db8::1%rr-no-such0 127.0.0.1%lo\n", NULL, 0, &errs);
    CHECK(problems == 0, "load: %s", errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = config_check_files(&cfg, e);
    fclose(e);
    snprintf(line, sizeof(line), "%s:3: source_addresses: unknown interface rr-no-such0: "
             "No such device", conf_path);
    CHECK(problems == 1 && has_line(errs, line), "unknown interface: %d\n%s", problems, errs);
    free(errs);
    config_free(&cfg);
}

int main(void)
{
    if (!config_test_setup())
        return 2;

    test_check_files();
    test_check_interfaces();

    config_test_cleanup();
    return check_done("test_config_check");
}
