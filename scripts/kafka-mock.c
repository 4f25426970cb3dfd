/*
 * kafka-mock — a Kafka-protocol broker for pg-sidekick's integration tests.
 *
 * Wraps librdkafka's in-memory mock cluster (rd_kafka_mock_cluster_new) in a
 * small daemon and adds a line-based TCP control port, because the mock does
 * not implement the CreateTopics admin API that kafkajs' admin client uses.
 * Started and stopped by scripts/services.sh; see the header comment there for
 * what the mock does and does not do (auto-creation, supported API versions).
 *
 * Build:  gcc -O2 scripts/kafka-mock.c -lrdkafka -o kafka-mock   (librdkafka-dev)
 *
 * Usage:  kafka-mock [--daemon] [--control HOST:PORT] [--topic NAME:PARTITIONS]...
 *                    [--brokers N] [--pidfile FILE] [--logfile FILE]
 *
 * On success it prints, then (with --daemon) the parent exits 0:
 *   KAFKA_BROKERS=127.0.0.1:<random port>
 *   KAFKA_CONTROL=127.0.0.1:<control port>
 *
 * Control protocol: one command per line, one answer line per command,
 * "ok[ <data>]" or "err <message>".
 *   ping                                  -> ok
 *   bootstrap                             -> ok 127.0.0.1:<port>
 *   create <topic> [partitions=1]         -> ok | err TOPIC_ALREADY_EXISTS ...
 *   topic-error <topic> <error>           every Metadata answer for <topic> carries
 *                                         <error> (creates the name if unknown); e.g.
 *                                         UNKNOWN_TOPIC_OR_PART makes it look missing,
 *                                         NO_ERROR clears it
 *   push-errors <api> <error> [<error>]…  the next requests of that API fail, in order
 *                                         (api: Produce, Fetch, Metadata, … or a number)
 *   broker-down [id] / broker-up [id]     drop all connections and refuse new ones /
 *                                         accept again on the same port (default: all)
 *   help
 * Errors are librdkafka names without the RD_KAFKA_RESP_ERR_ prefix, or numbers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define MAX_CLIENTS 64
#define LINE_MAX_LEN 1024
#define MAX_PUSHED_ERRORS 64

struct topic_spec {
        const char *name;
        int partitions;
};

struct client {
        int fd;
        size_t len;
        char buf[LINE_MAX_LEN];
};

static volatile sig_atomic_t stop_requested = 0;
static rd_kafka_mock_cluster_t *mcluster     = NULL;
static int broker_cnt                        = 1;
static char bootstraps[256];

static void on_signal(int sig) {
        (void)sig;
        stop_requested = 1;
}

static void logf_(const char *fmt, ...) {
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        va_list ap;
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", localtime_r(&now, &tm));
        fprintf(stderr, "%s kafka-mock: ", ts);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        fflush(stderr);
}

static void usage(FILE *out) {
        fprintf(out,
                "usage: kafka-mock [--daemon] [--control HOST:PORT] "
                "[--topic NAME:PARTITIONS]... [--brokers N] [--pidfile FILE] "
                "[--logfile FILE]\n");
}

/* Kafka's own rule: 1..249 chars of [A-Za-z0-9._-], not "." or "..". */
static int valid_topic(const char *t) {
        size_t n = strlen(t);
        if (n == 0 || n > 249 || !strcmp(t, ".") || !strcmp(t, ".."))
                return 0;
        for (size_t i = 0; i < n; i++) {
                char c = t[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
                        return 0;
        }
        return 1;
}

/* Strict decimal parse into [lo, hi]; returns 0 on success. */
static int parse_int(const char *s, long lo, long hi, long *out) {
        char *end;
        long v;
        if (!s || !*s)
                return -1;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno || *end || v < lo || v > hi)
                return -1;
        *out = v;
        return 0;
}

static int parse_error(const char *s, rd_kafka_resp_err_t *out) {
        const struct rd_kafka_err_desc *descs;
        size_t cnt;
        long v;
        if (!parse_int(s, -1000, 1000, &v)) {
                *out = (rd_kafka_resp_err_t)v;
                return 0;
        }
        if (!strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18))
                s += 18;
        rd_kafka_get_err_descs(&descs, &cnt);
        for (size_t i = 0; i < cnt; i++) {
                if (descs[i].name && !strcasecmp(descs[i].name, s)) {
                        *out = descs[i].code;
                        return 0;
                }
        }
        return -1;
}

static int parse_apikey(const char *s, int16_t *out) {
        static const struct {
                const char *name;
                int16_t key;
        } keys[] = {{"Produce", 0},         {"Fetch", 1},      {"ListOffsets", 2},
                    {"Metadata", 3},        {"OffsetCommit", 8}, {"OffsetFetch", 9},
                    {"FindCoordinator", 10}, {"JoinGroup", 11}, {"Heartbeat", 12},
                    {"LeaveGroup", 13},     {"SyncGroup", 14}, {"ApiVersion", 18},
                    {"InitProducerId", 22}};
        long v;
        if (!parse_int(s, 0, 100, &v)) {
                *out = (int16_t)v;
                return 0;
        }
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                if (!strcasecmp(keys[i].name, s)) {
                        *out = keys[i].key;
                        return 0;
                }
        }
        return -1;
}

static int set_brokers_up(const char *arg, int up, char *reply, size_t rsz) {
        long id;
        int lo = 1, hi = broker_cnt;
        if (arg) {
                if (parse_int(arg, 1, broker_cnt, &id)) {
                        snprintf(reply, rsz, "err no such broker: %s", arg);
                        return -1;
                }
                lo = hi = (int)id;
        }
        for (int b = lo; b <= hi; b++) {
                rd_kafka_resp_err_t err =
                    up ? rd_kafka_mock_broker_set_up(mcluster, b)
                       : rd_kafka_mock_broker_set_down(mcluster, b);
                if (err) {
                        snprintf(reply, rsz, "err broker %d: %s", b,
                                 rd_kafka_err2name(err));
                        return -1;
                }
        }
        snprintf(reply, rsz, "ok");
        return 0;
}

/* Executes one control command (line is modified in place). */
static void run_command(char *line, char *reply, size_t rsz) {
        char *argv[2 + MAX_PUSHED_ERRORS];
        int argc = 0;
        char *save = NULL;
        for (char *tok = strtok_r(line, " \t\r", &save);
             tok && argc < (int)(sizeof(argv) / sizeof(argv[0]));
             tok = strtok_r(NULL, " \t\r", &save))
                argv[argc++] = tok;

        if (argc == 0) {
                snprintf(reply, rsz, "err empty command");
                return;
        }
        const char *cmd = argv[0];

        if (!strcmp(cmd, "ping")) {
                snprintf(reply, rsz, "ok");
        } else if (!strcmp(cmd, "bootstrap")) {
                snprintf(reply, rsz, "ok %s", bootstraps);
        } else if (!strcmp(cmd, "create")) {
                long parts = 1;
                if (argc < 2 || argc > 3) {
                        snprintf(reply, rsz, "err usage: create <topic> [partitions]");
                        return;
                }
                if (!valid_topic(argv[1])) {
                        snprintf(reply, rsz, "err invalid topic name: %s", argv[1]);
                        return;
                }
                if (argc == 3 && parse_int(argv[2], 1, 10000, &parts)) {
                        snprintf(reply, rsz, "err partitions must be 1..10000: %s",
                                 argv[2]);
                        return;
                }
                rd_kafka_resp_err_t err =
                    rd_kafka_mock_topic_create(mcluster, argv[1], (int)parts, 1);
                if (err)
                        snprintf(reply, rsz, "err %s: %s", rd_kafka_err2name(err),
                                 rd_kafka_err2str(err));
                else
                        snprintf(reply, rsz, "ok");
        } else if (!strcmp(cmd, "topic-error")) {
                rd_kafka_resp_err_t err;
                if (argc != 3 || !valid_topic(argv[1]) || parse_error(argv[2], &err)) {
                        snprintf(reply, rsz, "err usage: topic-error <topic> <error>");
                        return;
                }
                rd_kafka_mock_topic_set_error(mcluster, argv[1], err);
                snprintf(reply, rsz, "ok");
        } else if (!strcmp(cmd, "push-errors")) {
                rd_kafka_resp_err_t errs[MAX_PUSHED_ERRORS];
                int16_t key;
                if (argc < 3 || parse_apikey(argv[1], &key)) {
                        snprintf(reply, rsz,
                                 "err usage: push-errors <api> <error> [<error>...]");
                        return;
                }
                for (int i = 2; i < argc; i++) {
                        if (parse_error(argv[i], &errs[i - 2])) {
                                snprintf(reply, rsz, "err unknown error: %s", argv[i]);
                                return;
                        }
                }
                rd_kafka_mock_push_request_errors_array(mcluster, key,
                                                        (size_t)(argc - 2), errs);
                snprintf(reply, rsz, "ok");
        } else if (!strcmp(cmd, "broker-down") || !strcmp(cmd, "broker-up")) {
                set_brokers_up(argc > 1 ? argv[1] : NULL, !strcmp(cmd, "broker-up"),
                               reply, rsz);
        } else if (!strcmp(cmd, "help")) {
                snprintf(reply, rsz,
                         "ok commands: ping | bootstrap | create <topic> [partitions] | "
                         "topic-error <topic> <error> | push-errors <api> <error>... | "
                         "broker-down [id] | broker-up [id]");
        } else {
                snprintf(reply, rsz, "err unknown command: %s (try help)", cmd);
        }
}

static int open_control(const char *hostport, char *errbuf, size_t esz) {
        char host[64];
        const char *colon = strrchr(hostport, ':');
        long port;
        struct sockaddr_in sin;
        int one = 1, fd;

        if (!colon || (size_t)(colon - hostport) >= sizeof(host) ||
            parse_int(colon + 1, 0, 65535, &port)) {
                snprintf(errbuf, esz, "bad --control address: %s", hostport);
                return -1;
        }
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = '\0';

        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_port   = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
                snprintf(errbuf, esz, "bad --control host (IPv4 only): %s", host);
                return -1;
        }
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                snprintf(errbuf, esz, "socket: %s", strerror(errno));
                return -1;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 16)) {
                snprintf(errbuf, esz, "control port %s: %s", hostport, strerror(errno));
                close(fd);
                return -1;
        }
        return fd;
}

/* Sends the whole buffer; control clients are tiny, so blocking is fine. */
static int send_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -1;
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Reads what is available; answers every complete line. Returns -1 to drop. */
static int serve_client(struct client *c) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (n <= 0)
                return (n < 0 && errno == EINTR) ? 0 : -1;
        c->len += (size_t)n;

        for (;;) {
                char *nl = memchr(c->buf, '\n', c->len);
                char reply[512];
                if (!nl) {
                        if (c->len == sizeof(c->buf)) {
                                send_all(c->fd, "err line too long\n", 18);
                                return -1;
                        }
                        return 0;
                }
                *nl = '\0';
                char line[LINE_MAX_LEN];
                snprintf(line, sizeof(line), "%s", c->buf);
                size_t consumed = (size_t)(nl - c->buf) + 1;
                memmove(c->buf, nl + 1, c->len - consumed);
                c->len -= consumed;

                char logged[LINE_MAX_LEN];
                snprintf(logged, sizeof(logged), "%s", line);
                run_command(line, reply, sizeof(reply));
                logf_("control: %s -> %s", logged, reply);
                strncat(reply, "\n", sizeof(reply) - strlen(reply) - 1);
                if (send_all(c->fd, reply, strlen(reply)))
                        return -1;
        }
}

static void serve(int listen_fd) {
        struct client clients[MAX_CLIENTS];
        struct pollfd pfds[MAX_CLIENTS + 1];
        int nclients = 0;

        while (!stop_requested) {
                pfds[0].fd     = listen_fd;
                pfds[0].events = POLLIN;
                for (int i = 0; i < nclients; i++) {
                        pfds[i + 1].fd     = clients[i].fd;
                        pfds[i + 1].events = POLLIN;
                }
                /* Timeout only so a missed signal cannot hang us forever. */
                int r = poll(pfds, (nfds_t)nclients + 1, 1000);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        logf_("poll: %s", strerror(errno));
                        break;
                }
                for (int i = nclients - 1; i >= 0; i--) {
                        if (!pfds[i + 1].revents)
                                continue;
                        if (serve_client(&clients[i])) {
                                close(clients[i].fd);
                                clients[i] = clients[--nclients];
                        }
                }
                if (pfds[0].revents & POLLIN) {
                        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd < 0)
                                continue;
                        if (nclients == MAX_CLIENTS) {
                                send_all(fd, "err too many control clients\n", 29);
                                close(fd);
                                continue;
                        }
                        clients[nclients].fd  = fd;
                        clients[nclients].len = 0;
                        nclients++;
                }
        }
        for (int i = 0; i < nclients; i++)
                close(clients[i].fd);
}

static void write_fd(int fd, const char *s) {
        size_t len = strlen(s);
        while (len > 0) {
                ssize_t n = write(fd, s, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                s += n;
                len -= (size_t)n;
        }
}

int main(int argc, char **argv) {
        const char *control = "127.0.0.1:59092";
        const char *pidfile = NULL, *logfile = NULL;
        struct topic_spec topics[MAX_TOPICS];
        int ntopics = 0, daemonize = 0, report_fd = STDOUT_FILENO;
        char errbuf[512], line[1024];

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(a, "--daemon")) {
                        daemonize = 1;
                } else if (!strcmp(a, "--control") && v) {
                        control = v, i++;
                } else if (!strcmp(a, "--pidfile") && v) {
                        pidfile = v, i++;
                } else if (!strcmp(a, "--logfile") && v) {
                        logfile = v, i++;
                } else if (!strcmp(a, "--brokers") && v) {
                        long n;
                        if (parse_int(v, 1, 9, &n)) {
                                fprintf(stderr, "kafka-mock: --brokers must be 1..9\n");
                                return 2;
                        }
                        broker_cnt = (int)n, i++;
                } else if (!strcmp(a, "--topic") && v) {
                        char *spec  = strdup(v);
                        char *colon = strrchr(spec, ':');
                        long parts  = 1;
                        if (colon) {
                                *colon = '\0';
                                if (parse_int(colon + 1, 1, 10000, &parts))
                                        colon = NULL, spec[0] = '\0';
                        }
                        if (!valid_topic(spec) || ntopics == MAX_TOPICS) {
                                fprintf(stderr, "kafka-mock: bad --topic %s\n", v);
                                return 2;
                        }
                        topics[ntopics].name       = spec;
                        topics[ntopics].partitions = (int)parts;
                        ntopics++, i++;
                } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                        usage(stdout);
                        return 0;
                } else {
                        usage(stderr);
                        return 2;
                }
        }

        if (daemonize) {
                /* Fork before librdkafka starts any thread; the parent waits for
                 * the child's one-line verdict on a pipe so callers get a real
                 * exit status and the addresses. */
                int pfd[2];
                if (pipe2(pfd, O_CLOEXEC)) {
                        perror("kafka-mock: pipe");
                        return 1;
                }
                pid_t pid = fork();
                if (pid < 0) {
                        perror("kafka-mock: fork");
                        return 1;
                }
                if (pid > 0) {
                        char out[1024];
                        size_t len = 0;
                        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
                        close(pfd[1]);
                        while (len < sizeof(out) - 1 && poll(&p, 1, 15000) > 0) {
                                ssize_t n = read(pfd[0], out + len, sizeof(out) - 1 - len);
                                if (n <= 0)
                                        break;
                                len += (size_t)n;
                        }
                        out[len] = '\0';
                        if (!strncmp(out, "KAFKA_BROKERS=", 14)) {
                                fputs(out, stdout);
                                return 0;
                        }
                        fprintf(stderr, "kafka-mock: %s\n",
                                len ? out : "daemon did not report within 15 s");
                        waitpid(pid, NULL, WNOHANG);
                        return 1;
                }
                close(pfd[0]);
                report_fd = pfd[1];
                setsid();
                if (chdir("/")) { /* not fatal */
                }
                int devnull = open("/dev/null", O_RDWR);
                int logfd   = logfile ? open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644)
                                      : devnull;
                if (logfd < 0)
                        logfd = devnull;
                dup2(devnull, STDIN_FILENO);
                dup2(logfd, STDOUT_FILENO);
                dup2(logfd, STDERR_FILENO);
        }

        int listen_fd = open_control(control, errbuf, sizeof(errbuf));
        if (listen_fd < 0) {
                logf_("%s", errbuf);
                snprintf(line, sizeof(line), "%s\n", errbuf);
                write_fd(report_fd, line);
                return 1;
        }

        /* Only the main thread may take SIGTERM/SIGINT (so poll() sees EINTR):
         * block them while librdkafka spawns its threads, unblock afterwards. */
        sigset_t sigs, old;
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &sigs, &old);
        signal(SIGPIPE, SIG_IGN);

        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* The handle only hosts the mock cluster; it never connects anywhere, so
         * silence its "no bootstrap.servers" notice. */
        rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, sizeof(errbuf));
        if (!rk) {
                snprintf(line, sizeof(line), "rd_kafka_new: %s\n", errbuf);
                write_fd(report_fd, line);
                return 1;
        }
        mcluster = rd_kafka_mock_cluster_new(rk, broker_cnt);
        if (!mcluster) {
                write_fd(report_fd, "rd_kafka_mock_cluster_new failed\n");
                return 1;
        }
        snprintf(bootstraps, sizeof(bootstraps), "%s",
                 rd_kafka_mock_cluster_bootstraps(mcluster));

        for (int i = 0; i < ntopics; i++) {
                rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
                    mcluster, topics[i].name, topics[i].partitions, 1);
                if (err) {
                        snprintf(line, sizeof(line), "create topic %s: %s\n",
                                 topics[i].name, rd_kafka_err2str(err));
                        write_fd(report_fd, line);
                        return 1;
                }
        }

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal; /* no SA_RESTART: poll() must return EINTR */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);

        if (pidfile) {
                FILE *f = fopen(pidfile, "w");
                if (!f) {
                        snprintf(line, sizeof(line), "pidfile %s: %s\n", pidfile,
                                 strerror(errno));
                        write_fd(report_fd, line);
                        return 1;
                }
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
        }

        snprintf(line, sizeof(line), "KAFKA_BROKERS=%s\nKAFKA_CONTROL=%s\n", bootstraps,
                 control);
        logf_("pid %d, brokers %s, control %s", (int)getpid(), bootstraps, control);
        write_fd(report_fd, line);
        if (daemonize)
                close(report_fd);

        serve(listen_fd);

        logf_("stopping");
        close(listen_fd);
        if (pidfile) {
                FILE *f = fopen(pidfile, "r");
                int pid = 0;
                if (f) {
                        if (fscanf(f, "%d", &pid) != 1)
                                pid = 0;
                        fclose(f);
                }
                if (pid == (int)getpid())
                        unlink(pidfile);
        }
        /* Everything is in memory and the kernel closes the sockets: skip
         * rd_kafka_destroy(), whose thread joins take about a second. */
        (void)rk;
        _exit(0);
}
