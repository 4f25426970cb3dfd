import { defineConfig } from 'vitest/config';

// Integration tests share the real services that test/support/global-setup.ts starts
// (scripts/services.sh); each test uses its own database / topic / queue / stream names.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: files run two at a time; the services are shared.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
