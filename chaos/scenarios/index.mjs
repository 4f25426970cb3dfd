// Every scenario, in the order they run. `quick: true` ones make up `npm run chaos -- --quick`.
import kill9 from './kill9.mjs';

export const scenarios = [kill9];
