/** The version every part reports (build info metric, agent registration); kept equal to package.json's. */
export const VERSION = "0.1.0";
