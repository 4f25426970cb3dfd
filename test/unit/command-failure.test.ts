import { describe, expect, it } from 'vitest';
import { expectedFailure } from '../../src/commands/failure.js';
import { ConfigError } from '../../src/errors.js';

/** What node-postgres rejects with when the server answers with an error. */
function serverError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, severity: 'ERROR' });
}

describe('expectedFailure: one line for what a command can expect, undefined (a stack) for bugs', () => {
  it('our own errors say their message', () => {
    expect(expectedFailure(new ConfigError('invalid config in x.yaml: …'))).toBe('invalid config in x.yaml: …');
  });

  it('a missing privilege names the grant', () => {
    const line = expectedFailure(serverError('42501', 'permission denied for database app'));
    expect(line).toContain('permission denied for database app (SQLSTATE 42501)');
    expect(line).toContain('GRANT CREATE ON DATABASE "app" TO <role>');
    expect(line).toContain('CREATE SCHEMA sidekick AUTHORIZATION <role>');
  });

  it("keeps the message of an error that wraps the database's, with the hint of the cause", () => {
    const cause = serverError('42P01', 'relation "sidekick.outbox" does not exist');
    const line = expectedFailure(new Error('uninstall failed, nothing was dropped: relation "sidekick.outbox" does not exist', { cause }));
    expect(line).toMatch(/^uninstall failed, nothing was dropped: .*SQLSTATE 42P01.*run `sidekick install`/);
  });

  it('a refused or lost connection is one line saying what to check', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(expectedFailure(refused)).toMatch(/^cannot reach the database: connect ECONNREFUSED 127\.0\.0\.1:1 \(is it running/);
    expect(expectedFailure(new AggregateError([refused]))).toMatch(/ECONNREFUSED/);
    expect(expectedFailure(new Error('Connection terminated unexpectedly'))).toMatch(/^cannot reach the database/);
    expect(expectedFailure(serverError('28P01', 'password authentication failed for user "app"'))).toMatch(/PGPASSWORD/);
  });

  it('programmer errors and unknown plain errors keep their stack', () => {
    expect(expectedFailure(new TypeError('x is not a function'))).toBeUndefined();
    expect(expectedFailure(new Error('something odd'))).toBeUndefined();
    expect(expectedFailure('a string')).toBeUndefined();
  });
});
