/* libFuzzer target for the control server: each input is one request line
 * from a local user, handled by a real supervisor (embedded default
 * configuration, a scratch runtime directory, no clients).  The first byte
 * picks the caller: root, so create/destroy/set/reload run too, or another
 * uid, which admin commands must refuse.  Every reply must be one JSON
 * object with "ok"; GLib criticals and warnings are fatal here, so a
 * request that trips GLib's or json-glib's own checks shows up as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/supervisor.h"
#include "util/log.h"

#include "../support/scratch_daemon.h"
#include "fuzz_glib.h"

/* The request's "command" string, or NULL; parsed here independently of
 * the server. */
static const char *request_command(const char *line) {
  static char cmd[32];
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_data(p, line, -1, NULL))
    return NULL;
  JsonNode *root = json_parser_get_root(p);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return NULL;
  JsonNode *c = json_object_get_member(json_node_get_object(root), "command");
  if (!c || !JSON_NODE_HOLDS_VALUE(c) || json_node_get_value_type(c) != G_TYPE_STRING)
    return NULL;
  g_strlcpy(cmd, json_node_get_string(c), sizeof(cmd));
  return cmd;
}

static ScratchDaemon *daemon_;

static void cleanup(void) {
  scratch_daemon_stop(daemon_);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  vgpu_fuzz_glib_init("fuzz-control");
  /* The embedded default, quiet: "reload" re-reads it, and the log level
   * follows it. */
  g_autoptr(GString) text = g_string_new(vgpu_config_default_text());
  if (!g_string_replace(text, "log-level=info", "log-level=error", 1))
    g_error("fuzz-control: the default configuration has no log-level=info");
  daemon_ = scratch_daemon_start(text->str);
  atexit(cleanup);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uid_t uid = data[0] & 1 ? 0 : 65534;
  g_autofree char *line = g_strndup((const char *)data + 1, size - 1);
  g_autofree char *reply = vgpu_control_handle(daemon_->sup, line, uid, uid == 0);
  g_autoptr(JsonParser) p = json_parser_new();
  if (!reply || strchr(reply, '\n') || !json_parser_load_from_data(p, reply, -1, NULL))
    abort(); /* one JSON line, always */
  JsonNode *root = json_parser_get_root(p);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    abort();
  JsonObject *o = json_node_get_object(root);
  if (!json_object_has_member(o, "ok"))
    abort();
  bool ok = json_object_get_boolean_member(o, "ok");
  if (!ok && !json_object_has_member(o, "error"))
    abort(); /* every refusal says why */
  /* The oracle reads the server's own command table: what it marks admin
   * must never succeed for a caller that is not, and a name it lacks must
   * never succeed at all. */
  const char *cmd = request_command(line);
  const VgpuControlCommand *entry = cmd ? vgpu_control_command_find(cmd) : NULL;
  if (ok && (!entry || (entry->admin && uid != 0)))
    abort();
  /* Tenants of other uids are never shown to a caller that is not admin. */
  if (ok && uid != 0 && entry && g_str_equal(entry->name, "show")) {
    JsonObject *in = json_object_get_object_member(o, "instance");
    JsonArray *ts = in ? json_object_get_array_member(in, "tenants") : NULL;
    for (guint i = 0; ts && i < json_array_get_length(ts); i++)
      if (json_object_get_int_member(json_array_get_object_element(ts, i), "client_uid") != uid)
        abort();
  }
  return 0;
}
