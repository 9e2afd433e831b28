/* What vgpud reads from /proc about the process behind a VM's socket
 * pair: a status text's Uid line and a comm line (vm_peer.c). */
#include <stdint.h>
#include <string.h>

#include "daemon/vm_peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char text[4096];
  size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
  memcpy(text, data, n);
  text[n] = 0;
  uid_t uid;
  if (vgpu_proc_status_uid(text, &uid) && uid == (uid_t)-1)
    __builtin_trap(); /* never the "no uid" value */
  char name[16];
  vgpu_proc_comm_name(text, name);
  size_t len = strlen(name);
  if (len > 15)
    __builtin_trap();
  for (size_t i = 0; i < len; i++)
    if (name[i] < 0x20 || name[i] >= 0x7f)
      __builtin_trap();
  return 0;
}
