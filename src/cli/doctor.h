/* vgpuctl doctor: what a vGPU host needs, checked from the files of a root
 * tree (see vgpuctl(1)).  Never talks to vgpud; every file it reads is
 * treated as untrusted (a fixture tree, a broken sysfs): reads are bounded
 * and anything unexpected is a finding, never a crash. */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* Known-good matrix: the oldest versions a check passes with. */
#define VGPU_DOCTOR_MESA_MIN "22.3"
#define VGPU_DOCTOR_VIRGL_MIN "0.10.4"
#define VGPU_DOCTOR_QEMU_MIN_KVM "7.2"
#define VGPU_DOCTOR_QEMU_MIN_TCG "10.0"

/* Runs every check against the host whose files lie under `root` ("/" for
 * this machine: only then are /dev/kvm probed and programs asked for their
 * version) and prints one line per check, or JSON.  Returns 0 when no
 * check failed, 1 when one did. */
int vgpu_doctor_run(const char *root, bool json);

/* The parsers, exposed for the fuzz target. */

/* "1:10.0.2+ds-2" -> {10, 0, 2}: the epoch is skipped, missing components
 * are 0.  False when it does not start with a number. */
bool vgpu_doctor_parse_version(const char *s, guint v[3]);
/* The Version of `package` when dpkg's status file `buf` (len bytes, need
 * not be terminated) records it installed, else NULL. */
char *vgpu_doctor_dpkg_version(const char *buf, gsize len, const char *package);
/* From /proc/interrupts: the number of CPU columns, and the IRQ numbers of
 * the lines that name one of `drivers` (at most `max`, written to irqs). */
guint vgpu_doctor_parse_interrupts(const char *buf, gsize len, const char *const *drivers,
                                   guint *irqs, guint max, guint *ncpus);
/* A field of /proc/meminfo ("HugePages_Total"), or -1. */
gint64 vgpu_doctor_meminfo_field(const char *buf, gsize len, const char *field);
/* The "binary" of a vhost-user descriptor, or NULL with *why set. */
char *vgpu_doctor_descriptor_binary(const char *buf, gsize len, char **why);
