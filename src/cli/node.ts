// One drms process for one mirrored set: what outlives a change of role (state directory, control socket, console,
// events, activity) and the role in force, which a promotion or a switchover replaces without restarting the process.
import type net from 'node:net';
import { Activity } from '../admin/activity.js';
import { startConsole, type NodeConsole } from '../admin/console.js';
import { serveControl, type ControlHandlers, type ControlRequest } from '../admin/control.js';
import { EventLog } from '../admin/events.js';
import { createLogger, type Logger } from '../log.js';
import { consoleOptions, type ConsoleFlags } from './flags.js';
import { onShutdown, prepareStateDir } from './process.js';
import type { NodeReport } from './report.js';

export type RoleName = 'primary' | 'backup';

export interface Role {
  readonly name: RoleName;
  status(): NodeReport;
  /** Control commands this role answers besides status and report. */
  readonly commands: ControlHandlers;
  /** The policy class of a path, for activity counts. */
  classify(p: string): string;
  /** Stops the role for good (process shutdown): unmount, drain, close. */
  stop(): Promise<void>;
}

const COMMANDS: ReadonlyArray<ControlRequest['cmd']> = ['sync', 'verify', 'promote', 'switchover'];

export class SiteNode {
  private role: Role | undefined;
  private console: NodeConsole | undefined;
  private control: net.Server | undefined;
  readonly events: EventLog;
  readonly activity: Activity;
  readonly startedAt = new Date().toISOString();

  private constructor(readonly stateDir: string, private starting: RoleName, readonly log: Logger, private readonly consoleFlags: ConsoleFlags) {
    this.events = new EventLog(log);
    this.activity = new Activity(stateDir, (p) => this.role?.classify(p) ?? 'other');
  }

  /** Claims the state directory (refused while another process holds it), and starts the console. */
  static async open(stateArg: string, starting: RoleName, consoleFlags: ConsoleFlags): Promise<SiteNode> {
    consoleOptions(consoleFlags); // flag mistakes are refused before anything starts
    const node = new SiteNode(prepareStateDir(stateArg), starting, createLogger(starting), consoleFlags);
    const handlers: ControlHandlers = {
      status: () => node.status(),
      report: (req) => node.activity.report(req.since ?? 0, req.files === true),
    };
    for (const cmd of COMMANDS) {
      handlers[cmd] = (req) => {
        const h = node.role?.commands[cmd];
        return h ? h(req) : { error: `this node is ${node.role ? `the ${node.role.name}` : 'still starting'}: it does not answer ${cmd}` };
      };
    }
    node.control = await serveControl(node.stateDir, handlers, node.log);
    node.console = await node.startConsole(starting);
    onShutdown(node.log, () => node.close());
    return node;
  }

  get roleName(): RoleName {
    return this.role?.name ?? this.starting;
  }

  status(): NodeReport {
    return this.role?.status() ?? { role: this.starting, state: this.stateDir, running: true, pid: process.pid, startedAt: this.startedAt, connected: false, appliedSeq: 0, lastError: 'starting' };
  }

  /** The role in force from now on. A change of role (promotion, switchover) restarts the console under the new name. */
  async serve(role: Role): Promise<void> {
    const changed = this.role !== undefined && this.role.name !== role.name;
    this.role = role;
    this.starting = role.name;
    if (changed) {
      await this.console?.close();
      this.console = await this.startConsole(role.name);
    }
  }

  private startConsole(name: RoleName): Promise<NodeConsole> {
    return startConsole(name, this.stateDir, consoleOptions(this.consoleFlags), { status: () => this.status(), activity: this.activity, events: this.events }, this.log);
  }

  private async close(): Promise<void> {
    await this.role?.stop();
    this.control?.close();
    await this.console?.close();
    await this.activity.close();
  }
}
