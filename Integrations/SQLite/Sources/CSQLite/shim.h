// What Swift cannot reach in sqlite3.h: sqlite3_config is variadic (Swift
// imports no C variadic function), and SQLITE_TRANSIENT is a macro casting
// -1 to a function pointer (not importable). One static inline wrapper each.
#ifndef VRANGE_CSQLITE_SHIM_H
#define VRANGE_CSQLITE_SHIM_H

#include <sqlite3.h>

/// sqlite3_config(SQLITE_CONFIG_PCACHE2, methods): SQLITE_MISUSE once SQLite
/// is initialised.
static inline int vrsqlite_config_pcache2(const sqlite3_pcache_methods2 *methods) {
    return sqlite3_config(SQLITE_CONFIG_PCACHE2, methods);
}

/// sqlite3_config(SQLITE_CONFIG_GETPCACHE2, methods): the methods in use.
static inline int vrsqlite_config_getpcache2(sqlite3_pcache_methods2 *methods) {
    return sqlite3_config(SQLITE_CONFIG_GETPCACHE2, methods);
}

/// sqlite3_config(SQLITE_CONFIG_SINGLETHREAD / MULTITHREAD / SERIALIZED).
static inline int vrsqlite_config_threading(int option) {
    return sqlite3_config(option);
}

/// sqlite3_bind_text with SQLITE_TRANSIENT (SQLite copies the text).
static inline int vrsqlite_bind_text(sqlite3_stmt *stmt, int index, const char *text, int bytes) {
    return sqlite3_bind_text(stmt, index, text, bytes, SQLITE_TRANSIENT);
}

#endif
