import { Chalk, chalkStderr } from 'chalk';

/**
 * Colours for stderr: on a terminal only (chalk's detection), and off whenever NO_COLOR is set
 * (https://no-color.org), which chalk itself does not look at.
 */
export const stderrColor = process.env.NO_COLOR ? new Chalk({ level: 0 }) : chalkStderr;
