/* /metrics: Prometheus text exposition (format 0.0.4) of the VM manager. */
#include <stdio.h>
#include <stdlib.h>
#include "daemon_i.h"

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *metrics_render(struct vmmgr *m)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	pthread_mutex_lock(&m->lock);
	family(f, "memvisor_vms", "gauge", "VMs by state.");
	for (int s = 0; s < MV_VM__COUNT; s++) {
		unsigned n = 0;
		for (size_t i = 0; i < m->nvms; i++)
			n += m->vms[i]->info.state == (enum mv_vm_state)s;
		fprintf(f, "memvisor_vms{state=\"%s\"} %u\n", mv_vm_state_name((enum mv_vm_state)s), n);
	}
	family(f, "memvisor_guest_memory_bytes", "gauge",
	       "Guest memory: capacity admitted by this host, committed to VMs, resident.");
	uint64_t resident = 0;
	for (size_t i = 0; i < m->nvms; i++)
		resident += m->vms[i]->info.resident_bytes;
	fprintf(f, "memvisor_guest_memory_bytes{kind=\"capacity\"} %llu\n",
		(unsigned long long)m->cfg.mem_capacity);
	fprintf(f, "memvisor_guest_memory_bytes{kind=\"committed\"} %llu\n",
		(unsigned long long)vmmgr_used(m));
	fprintf(f, "memvisor_guest_memory_bytes{kind=\"resident\"} %llu\n",
		(unsigned long long)resident);
	family(f, "memvisor_host_guest_ram_pages", "gauge",
	       "1 for the pages a new VM's RAM gets on this host (hugetlb, thp or 4k).");
	enum mv_mem_pages pages = host_guest_ram_pages();
	for (int p = MV_MEM_PAGES_4K; p <= MV_MEM_PAGES_HUGETLB; p++)
		fprintf(f, "memvisor_host_guest_ram_pages{pages=\"%s\"} %d\n",
			mv_mem_pages_name((enum mv_mem_pages)p), p == (int)pages);
	family(f, "memvisor_vmm_crashes_total", "counter", "VMM processes that died unasked.");
	fprintf(f, "memvisor_vmm_crashes_total %llu\n", (unsigned long long)m->vmm_crashes);

	family(f, "memvisor_vm_resident_bytes", "gauge", "Guest pages backed by host memory.");
	for (size_t i = 0; i < m->nvms; i++)
		fprintf(f, "memvisor_vm_resident_bytes{vm=\"%s\"} %llu\n", m->vms[i]->info.name,
			(unsigned long long)m->vms[i]->info.resident_bytes);
	family(f, "memvisor_vm_dirty_pages_per_second", "gauge",
	       "Guest pages written per second over the last sampling interval.");
	for (size_t i = 0; i < m->nvms; i++)
		fprintf(f, "memvisor_vm_dirty_pages_per_second{vm=\"%s\"} %.1f\n",
			m->vms[i]->info.name, m->vms[i]->info.dirty_rate);
	family(f, "memvisor_vm_dirty_pages_total", "counter", "Guest pages found dirty since start.");
	for (size_t i = 0; i < m->nvms; i++)
		fprintf(f, "memvisor_vm_dirty_pages_total{vm=\"%s\"} %llu\n", m->vms[i]->info.name,
			(unsigned long long)m->vms[i]->info.dirty_pages_total);
	family(f, "memvisor_vm_workload_ops_total", "counter", "Workload operations completed.");
	for (size_t i = 0; i < m->nvms; i++)
		fprintf(f, "memvisor_vm_workload_ops_total{vm=\"%s\"} %llu\n", m->vms[i]->info.name,
			(unsigned long long)m->vms[i]->info.ops_done);
	family(f, "memvisor_vm_page_faults_total", "counter", "Page faults taken by the VMM process.");
	for (size_t i = 0; i < m->nvms; i++) {
		fprintf(f, "memvisor_vm_page_faults_total{vm=\"%s\",type=\"minor\"} %llu\n",
			m->vms[i]->info.name, (unsigned long long)m->vms[i]->minflt);
		fprintf(f, "memvisor_vm_page_faults_total{vm=\"%s\",type=\"major\"} %llu\n",
			m->vms[i]->info.name, (unsigned long long)m->vms[i]->majflt);
	}
	fusion_metrics(m, f);
	guard_metrics(m, f);
	detect_metrics(m, f);
	pthread_mutex_unlock(&m->lock);
	ctr_metrics(m, f);
	fclose(f);
	return buf;
}
