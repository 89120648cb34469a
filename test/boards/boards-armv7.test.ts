/** The emulated armv7 board: install from its bundle, run, deploy, infer, roll back (see board-flow.ts). */
import { describeBoard } from './board-flow.js';

describeBoard('armv7');
