// Prometheus metrics (prom-client): read from the node's live state at each scrape, nothing counted twice.
import { Counter, Gauge, Registry } from 'prom-client';
import type { NodeReport } from '../cli/report.js';
import type { Activity } from './activity.js';
import type { EventLog } from './events.js';

export interface MetricsSource {
  activity: Activity;
  events: EventLog;
  status(): NodeReport;
}

/** A counter whose value is a total kept elsewhere: set at each scrape. */
function total(registry: Registry, name: string, help: string, labelNames: string[], values: () => Iterable<[Record<string, string>, number]>): void {
  new Counter({
    name, help, labelNames, registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of values()) this.inc(labels, v);
    },
  });
}

function gauge(registry: Registry, name: string, help: string, value: () => number | undefined): void {
  new Gauge({
    name, help, registers: [registry],
    collect() {
      const v = value();
      if (v !== undefined) this.set(v);
    },
  });
}

const byLabel = (label: string, m: Map<string, number> | Record<string, number>) => () =>
  [...(m instanceof Map ? m : Object.entries(m))].map(([k, v]): [Record<string, string>, number] => [{ [label]: k }, v]);

export function createMetrics(role: 'primary' | 'backup', src: MetricsSource): Registry {
  const r = new Registry();
  r.setDefaultLabels({ role });
  const s = () => src.status();
  const what = role === 'primary' ? 'journaled' : 'applied';
  total(r, 'drms_operations_total', `Operations ${what}, by kind`, ['kind'], byLabel('kind', src.activity.opsByKind));
  total(r, 'drms_bytes_total', `Data bytes ${what}, by kind`, ['kind'], byLabel('kind', src.activity.bytesByKind));
  total(r, 'drms_class_operations_total', `Operations ${what} on files, by policy class`, ['class'], byLabel('class', src.activity.opsByClass));
  total(r, 'drms_detected_files_total', 'Critical files detected (created, renamed or linked in, declared), by class', ['class'], byLabel('class', src.events.detected));
  total(r, 'drms_events_total', 'Operator events, by kind', ['kind'], byLabel('kind', src.events.counts));
  total(r, 'drms_reconnects_total', 'Sessions established with the peer', [], () => [[{}, s().reconnects ?? 0]]);
  total(r, 'drms_route_switches_total', 'Changes of the route to the backup', [], () => [[{}, s().routeSwitches ?? 0]]);
  total(r, 'drms_apply_errors_total', 'Operations the backup could not apply (the trees differ until repaired)', [], () => [[{}, s().divergences ?? 0]]);
  gauge(r, 'drms_connected', '1 while the primary and backup are connected', () => (s().connected ? 1 : 0));
  gauge(r, 'drms_epoch', 'This site\'s epoch (generation): a promotion increments it', () => s().epoch);
  gauge(r, 'drms_peer_epoch', 'The connected peer\'s epoch', () => s().peerEpoch);
  gauge(r, 'drms_fenced', '1 when a newer epoch fenced this primary (its mount is read-only)', () => (s().superseded ? 1 : 0));
  gauge(r, 'drms_journal_seq', 'Last journaled seq', () => s().lastSeq);
  gauge(r, 'drms_applied_seq', 'Last seq the backup has applied and made durable', () => s().appliedSeq);
  gauge(r, 'drms_lag_operations', 'Journaled operations the backup has not applied yet', () => s().lagOps);
  gauge(r, 'drms_lag_seconds', 'Age of the oldest operation the backup has not applied', () => s().lagSeconds);
  gauge(r, 'drms_durable_lag_seconds', 'Age of the oldest operation not yet durable at the backup', () => s().durableLagSeconds);
  gauge(r, 'drms_backlog_bytes', 'Journal bytes the backup has not applied', () => s().backlogBytes);
  gauge(r, 'drms_disk_free_bytes', 'Free bytes on the disk of the journal (primary) or of the DR copy (backup)', () => s().diskFreeBytes);
  gauge(r, 'drms_verify_differences', 'Differences found by the last verify', () => s().lastVerify?.differenceCount);
  gauge(r, 'drms_verify_last_run_timestamp_seconds', 'When the last verify ran', () => (s().lastVerify ? Date.parse(s().lastVerify!.at) / 1000 : undefined));
  return r;
}
