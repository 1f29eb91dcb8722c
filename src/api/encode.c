/* Response encoders: Vm, VmList items, Host and Verify JSON exactly as the
 * Vm/Host/Verify schemas of docs/api/openapi.yaml. Used by the route handlers,
 * the CLI (to print) and the tests. Backend strings are not trusted to be
 * NUL-terminated or UTF-8, so every string goes through api_jstr(). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

static const char *const state_names[MV_VM__COUNT] = {
	[MV_VM_MIGRATING] = "migrating", [MV_VM_INCOMING] = "incoming", [MV_VM_MIGRATED] = "migrated",
	[MV_VM_CREATING] = "creating", [MV_VM_RUNNING] = "running", [MV_VM_PAUSED] = "paused",
	[MV_VM_STOPPED] = "stopped", [MV_VM_CRASHED] = "crashed",
};

const char *mv_vm_state_name(enum mv_vm_state s)
{
	return (unsigned)s < MV_VM__COUNT ? state_names[s] : "unknown";
}

static const char *const backing_names[] = {
	[MV_MEM_BACKING_AUTO] = "auto", [MV_MEM_BACKING_4K] = "4k",
	[MV_MEM_BACKING_HUGETLB] = "hugetlb",
};

const char *api_backing_name(unsigned b)
{
	return b < sizeof(backing_names) / sizeof(backing_names[0]) ? backing_names[b] : "unknown";
}

int api_backing_parse(const char *s)
{
	for (unsigned i = 0; i < sizeof(backing_names) / sizeof(backing_names[0]); i++)
		if (strcmp(s, backing_names[i]) == 0)
			return (int)i;
	return -1;
}

json_t *api_jstr(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	json_t *j = json_stringn(s, n);
	if (j)
		return j;
	char *c = malloc(n + 1);
	if (!c)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	j = json_stringn(c, n);
	free(c);
	return j;
}

json_t *api_json_list(const void *v, size_t n, size_t size, api_elem_fn elem)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && v && i < n; i++) {
		if (json_array_append_new(arr, elem((const char *)v + i * size)) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return arr;
}

char *api_encode_list(const char *key, const void *v, size_t n, size_t size, api_elem_fn elem)
{
	json_t *arr = api_json_list(v, n, size, elem);
	return arr ? api_dump(json_pack("{s:o}", key, arr)) : NULL;
}

static json_t *workload_json(const struct mv_wl_params *w)
{
	return json_pack("{s:s, s:o, s:o, s:o, s:s, s:I, s:I}",
			 "kind", api_wl_kind_name(w->kind), "seed", api_ju(w->seed),
			 "wss", api_ju(w->wss_bytes), "rate", api_ju(w->rate),
			 "pattern", api_wl_pattern_name(w->pattern),
			 "put_pct", (json_int_t)w->put_pct, "hot_pct", (json_int_t)w->hot_pct);
}

json_t *api_vm_json(const struct mv_vm_info *vm)
{
	double rate = isfinite(vm->dirty_rate) ? vm->dirty_rate : 0.0;
	json_t *o = json_pack("{s:o, s:o, s:s, s:o, s:I, s:s, s:o, s:I, s:o}",
			      "id", JSTR(vm->id), "name", JSTR(vm->name),
			      "state", mv_vm_state_name(vm->state), "memory", api_ju(vm->memory),
			      "vcpus", (json_int_t)vm->vcpus, "backing", api_backing_name(vm->backing),
			      "workload", workload_json(&vm->workload), "pid", (json_int_t)vm->pid,
			      "created_at", api_ju(vm->created_at));
	if (!o)
		return NULL;
	json_t *st = json_pack("{s:o, s:o, s:o, s:f, s:o}", "ops_done", api_ju(vm->ops_done),
			       "resident_bytes", api_ju(vm->resident_bytes),
			       "dirty_pages_total", api_ju(vm->dirty_pages_total), "dirty_rate", rate,
			       "dirty_backend", JSTR(vm->dirty_backend));
	if (json_object_set_new(o, "stats", st) < 0)
		goto fail;
	json_t *aux = json_pack("[o, o, o, o]", api_ju(vm->wl_aux[0]), api_ju(vm->wl_aux[1]),
				api_ju(vm->wl_aux[2]), api_ju(vm->wl_aux[3]));
	if (json_object_set_new(st, "workload_aux", aux) < 0 ||
	    json_object_set_new(st, "throttle_pct", json_integer(vm->throttle_pct)) < 0)
		goto fail;
	json_t *fu = json_pack("{s:b, s:o, s:o, s:b}", "enabled", vm->fusion,
			       "fused_pages", api_ju(vm->fused_pages), "cow_breaks", api_ju(vm->cow_breaks),
			       "excluded", vm->fusion_excluded);
	if (json_object_set_new(o, "fusion", fu) < 0)
		goto fail;
	if (vm->state == MV_VM_STOPPED || vm->state == MV_VM_CRASHED) {
		json_t *ex = json_pack("{s:I, s:I, s:o}", "code", (json_int_t)vm->exit_code,
				       "signal", (json_int_t)vm->exit_signal,
				       "reason", JSTR(vm->exit_reason));
		if (json_object_set_new(o, "exit", ex) < 0)
			goto fail;
	}
	const struct mv_migration_info *mg = &vm->migration;
	if (mg->active) {
		json_t *j = json_pack("{s:o, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
				      "to", JSTR(mg->to), "from", JSTR(mg->from), "phase", JSTR(mg->phase),
				      "pass", (json_int_t)mg->pass,
				      "throttle_pct", (json_int_t)mg->throttle_pct,
				      "bytes_sent", api_ju(mg->bytes_sent), "pages_sent", api_ju(mg->pages_sent),
				      "pages_remaining", api_ju(mg->pages_remaining),
				      "pages_requested", api_ju(mg->pages_requested),
				      "dirty_rate", api_ju(mg->dirty_rate), "bandwidth", api_ju(mg->bandwidth),
				      "downtime_us", api_ju(mg->downtime_us), "total_us", api_ju(mg->total_us),
				      "error", JSTR(mg->error));
		if (json_object_set_new(o, "migration", j) < 0)
			goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

char *mv_api_encode_vm(const struct mv_vm_info *vm)
{
	return api_dump(api_vm_json(vm));
}

char *mv_api_encode_host(const struct mv_host_info *h)
{
	uint64_t free_b = h->memory_capacity > h->memory_used ? h->memory_capacity - h->memory_used : 0;
	return api_dump(json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
			      "version", JSTR(h->version), "hostname", JSTR(h->hostname),
			      "state_dir", JSTR(h->state_dir),
			      "memory_capacity", api_ju(h->memory_capacity),
			      "memory_used", api_ju(h->memory_used), "memory_free", api_ju(free_b),
			      "hugepages_free", api_ju(h->hugepages_free),
			      "guest_ram_pages", JSTR(h->guest_ram_pages),
			      "dirty_backend", JSTR(h->dirty_backend), "vms", (json_int_t)h->vms));
}

char *mv_api_encode_fusion(const struct mv_fusion_info *f)
{
	return api_dump(json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
			      "enabled", f->enabled, "rate", api_ju(f->rate), "shared", api_ju(f->shared),
			      "sharing", api_ju(f->sharing), "unshared", api_ju(f->unshared),
			      "full_scans", api_ju(f->full_scans), "pages_scanned", api_ju(f->pages_scanned),
			      "merges", api_ju(f->merges), "misses", api_ju(f->misses),
			      "cow_breaks", api_ju(f->cow_breaks), "unfused", api_ju(f->unfused),
			      "saved_bytes", api_ju(f->saved_bytes), "vms", (json_int_t)f->vms));
}

char *mv_api_encode_verify(const struct mv_verify_result *r)
{
	return api_dump(json_pack("{s:b, s:o, s:o, s:o}", "ok", r->ok, "ops_done", api_ju(r->ops_done),
			      "elapsed_us", api_ju(r->elapsed_us), "message", JSTR(r->message)));
}

static json_t *handover_json(const struct mv_handover_result *r)
{
	return json_pack("{s:o, s:b, s:i, s:i, s:o, s:o, s:o, s:o}", "vm", JSTR(r->vm), "ok", r->ok,
			 "old_pid", r->old_pid, "new_pid", r->new_pid, "downtime_us",
			 api_ju(r->downtime_us), "total_us", api_ju(r->total_us), "vmm", JSTR(r->vmm),
			 "message", JSTR(r->message));
}

char *mv_api_encode_handover(const struct mv_handover_result *r)
{
	return api_dump(handover_json(r));
}

char *api_encode_upgrade(const char *vmm, const struct mv_handover_result *r, size_t n)
{
	json_t *arr = json_array();
	bool ok = true;
	for (size_t i = 0; arr && i < n; i++) {
		ok = ok && r[i].ok;
		json_array_append_new(arr, handover_json(&r[i]));
	}
	return arr ? api_dump(json_pack("{s:b, s:o, s:o}", "ok", ok, "vmm", JSTR(vmm), "vms", arr))
		   : NULL;
}
