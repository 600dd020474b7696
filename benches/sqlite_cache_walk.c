// The page-cache walk of docs/BENCHMARKS.md §10, outside wardhook: 30-row write transactions
// into tables shaped like `deliveries` and `audit_log` (random-key indexes split pages on most
// transactions), with a checkpointer thread, timed for one `cache_size`.
//
//   S=$(ls -d ~/.cargo/registry/src/*/libsqlite3-sys-0.35.0/sqlite3)
//   cc -O2 -I"$S" -o /tmp/cache_walk benches/sqlite_cache_walk.c "$S/sqlite3.c" -lpthread -ldl -lm
//   for c in -65536 -16384 -8192 -4096 -2048; do /tmp/cache_walk 4000 $c; done
//
// Prints wall time and process CPU per row. Run it while holding the build lock.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "sqlite3.h"

static void ex(sqlite3 *db, const char *sql) {
  char *err = 0;
  if (sqlite3_exec(db, sql, 0, 0, &err)) {
    fprintf(stderr, "%s: %s\n", sql, err);
    exit(1);
  }
}

static volatile int stop = 0;

static void *checkpointer(void *arg) {
  (void)arg;
  sqlite3 *db;
  sqlite3_open("cache_walk.db", &db);
  ex(db, "PRAGMA busy_timeout=5000");
  while (!stop) {
    usleep(10000);
    sqlite3_wal_checkpoint_v2(db, 0, SQLITE_CHECKPOINT_PASSIVE, 0, 0);
  }
  sqlite3_close(db);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s BATCHES CACHE_SIZE\n", argv[0]);
    return 2;
  }
  unlink("cache_walk.db");
  unlink("cache_walk.db-wal");
  unlink("cache_walk.db-shm");
  sqlite3 *db;
  sqlite3_open("cache_walk.db", &db);
  char pragmas[512];
  snprintf(pragmas, sizeof pragmas,
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=%s;"
           "PRAGMA temp_store=MEMORY; PRAGMA secure_delete=ON; PRAGMA wal_autocheckpoint=0",
           argv[2]);
  ex(db, pragmas);
  ex(db,
     "CREATE TABLE d(id TEXT PRIMARY KEY, src TEXT, dedup TEXT, recv TEXT, key_id INT, ct BLOB,"
     " UNIQUE(src, dedup));"
     "CREATE INDEX d_r ON d(recv); CREATE INDEX d_k ON d(key_id);"
     "CREATE TABLE a(seq INTEGER PRIMARY KEY, ts TEXT, call_ref TEXT, delivery_id TEXT,"
     " action TEXT, detail TEXT, mac TEXT);"
     "CREATE INDEX a_ts ON a(ts); CREATE INDEX a_c ON a(call_ref);"
     "CREATE INDEX a_d ON a(delivery_id); CREATE INDEX a_a ON a(action, seq);");
  pthread_t th;
  pthread_create(&th, 0, checkpointer, 0);
  sqlite3_stmt *d, *a;
  sqlite3_prepare_v2(db,
                     "INSERT INTO d VALUES (printf('%016x-%d', ?1, ?1), 'demo',"
                     " lower(hex(randomblob(32))), printf('%016d', ?1), 1, randomblob(1300))",
                     -1, &d, 0);
  sqlite3_prepare_v2(db,
                     "INSERT INTO a VALUES (?1, printf('%016d', ?1), lower(hex(randomblob(32))),"
                     " printf('%016x-%d', ?1, ?1), 'delivery_accepted',"
                     " '{\"count\":0,\"event_type\":\"call.ended\",\"key_id\":1}',"
                     " lower(hex(randomblob(32))))",
                     -1, &a, 0);
  int batches = atoi(argv[1]);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  clock_t c0 = clock();
  for (int b = 0; b < batches; b++) {
    ex(db, "BEGIN IMMEDIATE");
    for (int i = 0; i < 30; i++) {
      int k = b * 30 + i;
      sqlite3_bind_int(d, 1, k);
      sqlite3_step(d);
      sqlite3_reset(d);
      sqlite3_bind_int(a, 1, k + 1);
      sqlite3_step(a);
      sqlite3_reset(a);
    }
    ex(db, "COMMIT");
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
  stop = 1;
  pthread_join(th, 0);
  double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  int rows = batches * 30;
  printf("cache_size %s: %d rows, wall %.1f us/row, cpu %.1f us/row\n", argv[2], rows,
         wall * 1e6 / rows, cpu * 1e6 / rows);
  sqlite3_finalize(d);
  sqlite3_finalize(a);
  sqlite3_close(db);
  return 0;
}
