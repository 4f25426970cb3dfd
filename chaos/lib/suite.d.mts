// Types of suite.mjs for the TypeScript test that runs the quick chaos scenarios (test/integration/chaos-quick.test.ts).

export interface SinkVerdict {
  sink: string;
  /** Committed (key, version) pairs this sink was expected to get. */
  written: number;
  /** Distinct (key, version) pairs it got. */
  delivered: number;
  arrivals: number;
  lost: number;
  duplicates: number;
  /** First-delivery order violations: version n+1 of a key first arrived before version n. */
  order: number;
  phantom: number;
  unexpected: number;
  lostSample: string[];
}

export interface ScenarioRow {
  name: string;
  written: number | undefined;
  results: SinkVerdict[];
  recoveryMs: number | undefined;
  seconds: number;
  bridgeErrors: number;
  notes: string[];
  failures: string[];
  ok: boolean;
}

export interface Scenario {
  name: string;
  description: string;
  quick: boolean;
}

export interface RunOptions {
  quick?: boolean;
  keepDir?: boolean;
  progress?: (line: string) => void;
}

export function selectScenarios(options?: { quick?: boolean; only?: string[] }): Scenario[];
export function runScenario(scenario: Scenario, options?: RunOptions): Promise<ScenarioRow>;
export function runScenarios(list: Scenario[], options?: RunOptions): Promise<ScenarioRow[]>;
export function formatTable(rows: ScenarioRow[]): string;
